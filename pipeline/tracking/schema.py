"""The run schema: every tag, metric, param and artifact path the pipeline writes.

Writers (the search, reproduce, the report) and readers (ledger, report, reproduce,
benchmarks, the UI capture) spell names through these constants, and readers get
typed records (`records.py`) rather than MLflow's column strings. A second tracking
backend would implement exactly this schema. Plain Python: no MLflow import here.
"""

from __future__ import annotations

# MLflow's own tag linking a child run to its parent (only `store.py` reads it).
MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"


class Kind:
    """Tag `kind`: what a run is."""

    SEARCH = "search"  # one per search: config, best trial, test score, summary
    TRIAL = "trial"  # one per (configuration, seed), nested under its search
    REPRODUCE = "reproduce"  # a retraining by `pipeline.reproduce`
    REFERENCE = "reference"  # a reference model (search.reference), nested beside trials


class Status:
    """MLflow run statuses (and, lower-cased, the `status` tag that mirrors them)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Tag:
    # every run
    KIND = "kind"
    STATUS = "status"  # finished | failed | killed (mirrors the run status)
    ERROR = "error"  # "<Type>: <one line>" of a failed run
    INTERRUPTED = "interrupted"  # "true": killed, or found RUNNING after its process died
    HEARTBEAT = "heartbeat"  # unix seconds of a RUNNING run's last sign of life
    STALE_AFTER = "stale_after_s"  # the writer's tracking.stale_after_s: how long it may be silent
    STALE = "stale"  # "true": closed as FAILED after tracking.stale_after_s without heartbeat
    SEARCH_ID = "search_id"  # the search's name (parent and children)
    DATA_FINGERPRINT = "data_fingerprint"
    # search (parent) runs
    COMPARABLE_HASH = "comparable_hash"  # what must not change for a resume
    SUPERSEDED = "superseded"  # "true": restarted with search.force_new
    REGISTERED_MODEL = "registered_model"  # "<name>/<version>" of the best trial's model
    TUNER = "tuner"
    OBJECTIVE = "objective"
    CLUSTER = "cluster"
    COMMAND = "command"  # the search command line
    DATA_LEAK = "data_leak"  # "val exact 2.5%, ...": shares over data.audit.max_leak
    BEST_RUN_ID = "best_run_id"
    STOPPED = "stopped"  # why a search ended before tuner.max_trials (search.stop.patience)
    BEST_TRIAL_ID = "best_trial_id"
    BEST_PREFIX = "best."  # best.<hyperparameter>
    VERSION_PREFIX = "version."  # version.<package>
    MACHINE_PREFIX = "machine."  # machine.platform | cpus | python
    # trial (child) runs
    SEARCHED = "searched"  # comma-separated dotted params the tuner chose (model.units,...)
    TRIAL_ID = "trial_id"  # keras-tuner's trial id ("00", "01", ...)
    TRIAL_NUMBER = "trial_number"  # 1, 2, ... (trial id + 1)
    CONFIG_HASH = "config_hash"  # hyperparameters + seed + data: a replicate's identity
    GROUP = "group"  # the configuration whatever the seed
    DATA = "data"  # data set name
    SEED = "seed"
    POOLING = "pooling"
    VARIANT = "variant"  # the pooling registry's label, e.g. attn-tanh
    FAITH_RANKING = "faith_ranking"  # attention | saliency: what the erasure ranks by
    PRUNED = "pruned"  # "true": stopped early by the pruner (tuner.pruning); still FINISHED
    PRUNED_EPOCH = "pruned_epoch"  # the last epoch it trained (1-based)
    WORKER = "worker"  # cluster worker id
    VECTORS = "vectors"  # the aligned word vectors' fingerprint (source file|trained)
    XLA = "xla"  # on | off: whether the fit ran under XLA (train.jit_compile)
    XLA_SHARDS = "xla_shards"  # XLA blocks of each batch (training.sharded); absent: 1
    # reference runs (also kind=reference): never a trial, never the best
    REFERENCE = "reference"  # "true"
    # reproduce runs
    REPRODUCES = "reproduces"  # the run id it retrains
    SOURCE_SEARCH_ID = "source_search_id"


class Metric:
    # per epoch (step = epoch) and, one step after the last epoch, the restored model
    LOSS = "loss"
    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    VAL_ACCURACY = "val_accuracy"
    VAL_LOSS = "val_loss"
    VAL_MACRO_F1 = "val_macro_f1"
    # once per trial run
    BEST_EPOCH = "best_epoch"
    EPOCHS_TRAINED = "epochs_trained"
    BEST_VAL_PREFIX = "best_"  # best_val_* (best epoch's values; parent: the best trial's)
    PARAM_COUNT = "param_count"
    TRAIN_SECONDS = "train_seconds"
    DIAGNOSTICS_SECONDS = "diagnostics_seconds"  # final heatmaps + faithfulness, logged
    ATTENTION_PREFIX = "attention_"  # attention_entropy, attention_on_padding, ...
    ATTENTION_ENTROPY = "attention_entropy"  # normalised: 1 uniform, 0 one token
    ATTENTION_ON_PADDING = "attention_on_padding"
    ATTENTION_ON_KEYS = "attention_on_keys"  # synthetic data: share on planted keys
    ATTENTION_TOP1_KEY_HIT = "attention_top1_key_hit"
    # faithfulness (pipeline.diagnostics.faithfulness), on the final model's evaluation subset
    FAITH_PREFIX = "faith_"
    FAITH_EXAMPLES = "faith_examples"  # size of the evaluation subset
    FAITH_OCCLUSION_TAU = "faith_occlusion_tau"  # Kendall tau, weights vs occlusion
    FAITH_UNIFORM_DELTA = "faith_uniform_delta"  # val accuracy, uniform weights - learned

    @staticmethod
    def comprehensiveness(percent: int, random: bool = False) -> str:
        """faith_comprehensiveness_20 (top 20% removed), ..._random_20 (20% random removed)."""
        return f"faith_comprehensiveness{'_random' if random else ''}_{percent}"

    @staticmethod
    def sufficiency(percent: int, random: bool = False) -> str:
        """faith_sufficiency_20 (only the top 20% kept), ..._random_20."""
        return f"faith_sufficiency{'_random' if random else ''}_{percent}"

    # search (parent) runs
    TRIALS_FINISHED = "trials_finished"
    RACE_ROUNDS = "race_rounds"  # search.seeds=adaptive: rounds of the race
    RACE_TRAININGS = "race_trainings"  # ... and its trainings, first seeds included
    TRIALS_FAILED = "trials_failed"
    TEST_PREFIX = "test_"  # test_accuracy, test_loss, test_macro_f1


# Params: a trial run logs its active hyperparameters under their knob names
# (`pooling`, `units`, `tuner/epochs`, ...); a search run logs its flattened config
# (`model.units`, `tuner.kind`, ...), of which readers use these:


class Param:
    BASELINE = "search.baseline"
    VARY_SPLIT = "search.vary_split"


class Artifact:
    # search (parent) runs
    CONFIG = "config.yaml"  # the resolved config
    SEARCH_SPACE = "search_space.json"
    VOCAB = "vocab.txt"
    DATA_AUDIT = "data_audit.json"  # pipeline.data.audit: duplicates, leaks, labels
    LABEL_ISSUES = "label_issues.json"  # mlflow.log_table: likely mislabelled rows
    ENVIRONMENT = "environment.json"
    SUMMARY = "search_summary.csv"
    COMPARISON = "comparison.png"
    LEADERBOARD = "leaderboard.json"  # mlflow.log_table: a table in the UI's artifact view
    SEARCH_VIEWS = "search"  # search/importance.json + Optuna's views (history, slices, ...)
    IMPORTANCE = "search/importance.json"
    RACE = "search/race.json"  # rounds, seeds per configuration, verdicts, why it stopped
    REPORT_DIR = "report"
    # trial runs
    TRIAL_RECORD = "trial.json"  # what `pipeline.reproduce` needs (records.TrialRecord)
    PREDICTIONS = "predictions/val.npz"  # validation predictions (records.Predictions)
    CONFUSION = "confusion_matrix.png"
    CONFUSION_DATA = "confusion_matrix.json"  # what the png shows: counts and class names
    MODEL_DIR = "model"
    ATTENTION_DIR = "attention"  # attention/<name>_<kind>.{png,html,json}

    @staticmethod
    def attention(name: str, kind: str, ext: str) -> str:
        """attention/final_attention.png, attention/epoch_002_saliency.json, ..."""
        return f"{Artifact.ATTENTION_DIR}/{name}_{kind}.{ext}"
