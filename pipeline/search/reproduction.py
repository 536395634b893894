"""Retrain one trial run from its logs, through the tuner's own trial code.

Rebuilds the exact config of a child run from what the search logged (the parent's
resolved `config.yaml` and vocabulary, the child's trial record with hyperparameters,
seed and data fingerprint), refuses when the data no longer matches, retrains with op
determinism through `pipeline.search.trial` (the code path the tuner took), logs a new
run tagged `reproduces=RUN_ID` and compares both runs' metrics.
`python -m pipeline.reproduce` is its command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from omegaconf import DictConfig, OmegaConf

from pipeline import progress
from pipeline.config import CONF_DIR
from pipeline.errors import SearchError
from pipeline.runtime.redaction import redact
from pipeline.tracking import Artifact, Kind, Metric, Status, Tag, TrialRecord, TrialRun

# Metrics that measure the machine, not the model: never compared.
UNCOMPARED = (Metric.TRAIN_SECONDS, Metric.DIAGNOSTICS_SECONDS)


@dataclass
class Source:
    """What a child run logged, enough to train it again."""

    run: TrialRun
    cfg: DictConfig
    record: TrialRecord
    vocab: list[str]


def load_source(tracker, run_id: str) -> Source:
    from pipeline.config import import_plugins
    from pipeline.config.sections import config_class
    from pipeline.tracking.records import StaleRecordError

    run = tracker.get_trial_run(run_id)
    if run.kind != Kind.TRIAL or not run.parent_id:
        raise SearchError(
            f"run {run_id} is not a trial run of a search (kind={run.kind or '?'}); "
            "pass the id of a child run"
        )
    if run.status != Status.FINISHED:
        why = f": {run.error}" if run.error else ""
        raise SearchError(
            f"run {run_id} ended {run.status}{why}; it has no final metrics to compare a "
            "reproduction with (reproduce a FINISHED trial run of the same configuration)"
        )
    try:
        record = tracker.read_trial_record(run_id)
    except StaleRecordError as err:
        raise SearchError(f"run {run_id}: {err}") from None
    logged = stored_config(tracker.read_text(run.parent_id, Artifact.CONFIG))
    logged = _current_layout(logged)
    import_plugins(list(logged.plugins))  # their config sections join the schema
    cfg = OmegaConf.merge(OmegaConf.structured(config_class(list(logged.plugins))), logged)
    vocab = tracker.read_text(run.parent_id, Artifact.VOCAB).split("\n")
    return Source(run=run, cfg=cfg, record=record, vocab=vocab)


def stored_config(text: str) -> DictConfig:
    """A config.yaml read from a store, as data: an `${...}` in it (a teammate's planted
    `${oc.env:PGPASSWORD}`) stays literal text, never resolved against this machine."""
    import yaml

    def literal(value):
        if isinstance(value, dict):
            return {k: literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        if isinstance(value, str):
            # OmegaConf's escape: `\${` is literal, and backslashes before it are doubled
            return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
        return value

    return OmegaConf.create(literal(yaml.safe_load(text) or {}))


def _current_layout(logged: DictConfig) -> DictConfig:
    """A config logged by an earlier version, in today's schema (keys since removed)."""
    tuner = logged.get("tuner")
    if tuner is not None and "executions_per_trial" in tuner:
        del tuner["executions_per_trial"]  # one execution per run; search.seeds replaced it
    if "plugins" not in logged:
        logged.plugins = []
    data = logged.get("data")
    if data is not None:
        # Runs before the data audit kept every row, split row by row, kept the markup.
        from pipeline.data.prepare import NEUTRAL_SETTINGS

        defaults = OmegaConf.load(CONF_DIR / "config.yaml").data
        for key, before in NEUTRAL_SETTINGS.items():
            if key not in data:
                data[key] = before
        for key in ("near_duplicates", "audit"):
            if key not in data:
                data[key] = defaults[key]
        synthetic = data.get("synthetic")
        if synthetic is not None and "rule" not in synthetic:
            synthetic.rule = "majority"  # the synthetic task before negation
    model = logged.get("model")
    if model is not None:
        # Runs before pretrained vectors started from Keras' initializer, trainable.
        if "embedding_trainable" not in model:
            model.embedding_trainable = True
        if "recurrent_dropout" not in model:
            model.recurrent_dropout = 0.0
        if "lstm_kernel" not in model:  # before the fused kernel: Keras' loop
            model.lstm_kernel = "keras"
        if "xla_lstm" not in model:  # before the XLA recurrence: Keras' loop under XLA
            model.xla_lstm = "keras"
        if "embeddings" not in model:
            model.embeddings = OmegaConf.load(CONF_DIR / "model" / "default.yaml").embeddings
            model.embeddings.source = "random"
    train = logged.get("train")
    if train is not None:
        # Keys added later keep what runs logged before them did: one train step per call,
        # quantile buckets. (Today's defaults would retrain on another floating-point path.)
        if "steps_per_execution" not in train:
            train.steps_per_execution = 1
        if "jit_compile" not in train:  # before XLA was an option: never compiled
            train.jit_compile = "false"
            train.xla = OmegaConf.load(CONF_DIR / "train" / "default.yaml").xla
        if "shards" not in train.xla:  # before XLA blocks: one program a batch
            train.xla.shards = 1
        if "bucketing" in train and "exact" not in train.bucketing:
            train.bucketing.exact = False
    return logged


def compared_metrics(original: dict[str, float], reproduced: dict[str, float]) -> list[str]:
    return sorted(k for k in original.keys() & reproduced.keys() if k not in UNCOMPARED)


def side_by_side(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> tuple[str, bool]:
    """A plain-text table of both runs' metrics and whether all match within `tolerance`."""
    names = compared_metrics(original, reproduced)
    width = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{width}}  {'original':>12}  {'reproduced':>12}  {'difference':>11}"]
    worst = 0.0
    for name in names:
        a, b = original[name], reproduced[name]
        diff = b - a
        worst = max(worst, abs(diff))
        lines.append(f"{name:<{width}}  {a:>12.6g}  {b:>12.6g}  {diff:>11.2e}")
    return "\n".join(lines), bool(names) and worst <= tolerance


@dataclass
class Reproduction:
    original: TrialRun
    reproduced: TrialRun
    table: str
    matches: bool


@dataclass
class ReproductionPlan:
    """A checked source run, its config and data, before anything heavy is imported."""

    tracker: object
    source: Source
    data: object  # PreparedData


def plan_reproduction(base: DictConfig, run_id: str) -> ReproductionPlan:
    """Load what `run_id` logged and check the data still matches (no TensorFlow)."""
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.runtime.checks import validate_config
    from pipeline.tracking.store import open_tracker

    tracker = open_tracker(base.tracking)
    source = load_source(tracker, run_id)
    cfg = source.cfg
    cfg.tracking = base.tracking  # the store the run was found in, not the one it logged
    cfg.search.verbose = base.search.verbose
    cfg.search.keep_compiled = base.search.keep_compiled  # this process's, as verbose
    validate_config(cfg)  # imports the plugins the search used
    record = source.record
    if record.split_seed is not None:  # search.vary_split: this replicate's own split
        cfg.data.split_seed = record.split_seed
    data = prepare(typed_data(cfg.data))
    if data.fingerprint != record.data_fingerprint:
        raise SearchError(
            f"data fingerprint differs: run {run_id} used {record.data_fingerprint[:12]}, the "
            f"data '{cfg.data.name}' gives {data.fingerprint[:12]} now (the file or its "
            "preprocessing changed); refusing to compare"
        )
    if record.split_seed is None and data.vocab != source.vocab:
        raise SearchError(f"vocabulary differs from the one run {run_id}'s search logged")
    return ReproductionPlan(tracker, source, data)


def retrain(plan: ReproductionPlan, tolerance: float = 1e-6) -> Reproduction:
    """Train the planned run again with op determinism, log it, compare the metrics."""
    from pipeline.models.registry import variant_label
    from pipeline.search.runner import TrialRunner, TrialSpec
    from pipeline.search.space import trial_settings, trial_vectors
    from pipeline.search.trial import TrialLogging
    from pipeline.training.fit import enable_determinism

    tracker, source, data = plan.tracker, plan.source, plan.data
    cfg, record, run_id = source.cfg, source.record, source.run.run_id
    if source.run.xla:  # op determinism would make Keras drop XLA: retrain as the run trained
        progress.say(
            "note: the original run trained under XLA (op determinism off, as XLA needs); "
            "XLA fits measured bit-identical run to run on this CPU"
        )
        enable_determinism(False)
    else:
        if not cfg.train.deterministic:
            progress.say(
                "note: the original run had train.deterministic=false; metrics may differ slightly"
            )
        enable_determinism(True)
    model_settings, train = trial_settings(cfg, record.hyperparameters)
    train = replace(train, seed=record.seed)
    if source.run.xla:  # its blocks a batch, whatever this machine's cores would give
        train = replace(train, xla=replace(train.xla, shards=source.run.xla_shards))
    if source.run.pruned_epoch:  # the pruner stopped it there: train as far, no further
        train = replace(train, epochs=min(train.epochs, source.run.pruned_epoch))
        progress.say(f"note: the original run was pruned after epoch {source.run.pruned_epoch}")
    table = trial_vectors(cfg, data, model_settings)
    found = None if table is None else table.fingerprint
    if found != record.vectors:
        raise SearchError(
            f"word vectors differ: run {run_id} started from "
            f"{(record.vectors or 'random')[:12]}, model.embeddings gives "
            f"{(found or 'random')[:12]} now (the vector file or its settings changed); "
            "refusing to compare"
        )
    variant = variant_label(model_settings)
    name = source.run.name
    progress.say(
        f"reproducing run {run_id} ({name}, {variant}, seed {record.seed}) "
        f"of search '{source.run.search_id}'"
    )
    tracker.use_experiment(source.run.experiment_id)
    tags = {
        Tag.KIND: Kind.REPRODUCE,
        Tag.REPRODUCES: run_id,
        Tag.SOURCE_SEARCH_ID: source.run.search_id or "",
        Tag.DATA_FINGERPRINT: data.fingerprint,
        Tag.SEED: record.seed,
        Tag.VARIANT: variant,
    }
    spec = TrialSpec.of(
        record.hyperparameters, model_settings, train, record.seed, data, vectors=table,
        split_seed=record.split_seed,
    )  # fmt: skip
    opened: list[str] = []

    def log_config(run_id: str) -> None:
        opened.append(run_id)
        tracker.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), Artifact.CONFIG)

    runner = TrialRunner(cfg, tracker, lambda d: TrialLogging.for_search(cfg, d, tracker))
    runner.run(spec, f"reproduce-{name}", tags, f"reproduction of {name}", nested=False,
               opened=log_config)  # fmt: skip
    new_id = opened[0]
    reproduced = tracker.get_trial_run(new_id)
    table, matches = side_by_side(source.run.metrics, reproduced.metrics, tolerance)
    return Reproduction(source.run, reproduced, table, matches)


def reproduce_run(base: DictConfig, run_id: str, tolerance: float = 1e-6) -> Reproduction:
    """Retrain `run_id` in the store of `base.tracking`, log the new run, compare."""
    return retrain(plan_reproduction(base, run_id), tolerance)
