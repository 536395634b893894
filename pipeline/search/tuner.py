"""keras-tuner's Tuner, with every trial (configuration x seed) a nested MLflow run.

`TrackedTuner.run_trial` is keras-tuner's own extension point: it trains one
configuration once per seed and logs each seed as a child of the search's parent run
(callbacks given to `search()` would be deep-copied, so per-trial logging lives here).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import VALIDATION_METRICS, TunerKind, is_better
from pipeline.config.schema import TrainConfig
from pipeline.data import PreparedData
from pipeline.errors import DiskFull, disk_full, disk_full_line, one_line
from pipeline.models.registry import variant_label
from pipeline.search.outcome import new_row, trial_row
from pipeline.search.pruning import PruningCallback, curves_from_runs, make_mirror
from pipeline.search.replicates import (
    group_hash,
    mean_scores,
    replicate_data,
    replicate_key,
    replicated,
    seeds_of,
    split_seed_of,
)
from pipeline.search.runner import TrialRunner, TrialSpec
from pipeline.search.space import (
    active_values,
    trial_settings,
    trial_vectors,
)
from pipeline.search.state_files import write_json_atomically
from pipeline.search.trial import TrainedTrial, TrialLogging, artifact_spool
from pipeline.tracking import Kind, Metric, Status, Tag
from pipeline.tracking.outage import TrackingOutage
from pipeline.tracking.protocol import TrackingStore
from pipeline.tracking.spool import ArtifactSpool

WEIGHTS_FILE = "best.weights.h5"


class TrackingLost(kt.errors.FatalError, TrackingOutage):
    """The tracking server stayed away beyond its outage budget: keras-tuner must not count
    this as a failed trial and go on, the search stops (resumable)."""


class TrialDiskFull(kt.errors.FatalError, DiskFull):
    """A trial's write found no space: keras-tuner keeps the trial ongoing (a resume runs
    it again) instead of recording a FAILED trial it would never re-run."""


def written_folders(cfg: DictConfig) -> tuple[str, ...]:
    """Where a search writes: the artifact root (a local one), its keras-tuner folder and
    the temporary folder (MLflow stages uploads there)."""
    import tempfile

    root = str(cfg.tracking.artifact_root)
    local = () if "://" in root else (root,)
    return (*local, str(cfg.tuner.directory), tempfile.gettempdir())


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def trial_run_name(
    number: int, variant: str, units: int, learning_rate: float, seed: int | None
) -> str:
    """What a run is, readable in MLflow's runs table and compare page:
    `t006 attn-tanh u64 lr3e-3 s2` (trial, variant, units, learning rate, seed)."""
    lr = re.sub(r"\.0e", "e", re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{learning_rate:.1e}"))
    parts = [f"t{number:03d}", variant, f"u{units}", f"lr{lr}"]
    if seed is not None:
        parts.append(f"s{seed}")
    return " ".join(parts)


class TrackedTuner(kt.Tuner):
    """A keras-tuner Tuner (any oracle) whose trials are MLflow child runs."""

    def __init__(
        self,
        oracle,
        hypermodel,
        *,
        cfg: DictConfig,
        data: PreparedData,
        tracker: TrackingStore,
        search_id: str,
        **kwargs,
    ):
        super().__init__(oracle, hypermodel, **kwargs)
        self.cfg = cfg
        self.data = data
        self.tracker = tracker
        self.search_id = search_id
        self.rows: list[dict[str, Any]] = []  # one summary row per trial run
        self._indexed: list[dict[str, Any]] | None = None  # the list _rows_by_key indexes
        self._indexed_count = 0
        self._rows_by_key: dict[str | None, list[dict[str, Any]]] = {}
        self.logging = TrialLogging.for_search(cfg, data, tracker)
        self._split_logging: dict[str, TrialLogging] = {}
        self.runner = TrialRunner(cfg, tracker, self._logging_for)
        self.best_score: float | None = None
        self.best_number: int | None = None
        self.worker_id: str | None = None  # set on cluster workers, tagged on their runs
        self.parent_run_id: str | None = None  # the search's parent run (pruning reads it)
        self.pruning = make_mirror(cfg)
        self._pruning_read_ms: int | None = None  # end time of the newest run the mirror read
        # False (set by run_search for a parent run it has just opened): every run under
        # the parent is this process's own (its rows, its pruning mirror), so the store
        # holds no news and the per-trial reads are skipped. Resumed searches, cluster
        # workers and any tuner given an existing parent read it.
        self.reads_store = True
        self._spool: ArtifactSpool | None = None  # made by drive(), once worker_id is set

    def _sync_pruning(self) -> None:
        """Add the store's finished curves (a resumed search's, other workers') to the
        pruning mirror: every replicate once. Per-epoch pruners read only the runs that
        ended since the last read (and their curves), so the pause between trials stays
        flat over a long search; wilcoxon regroups every configuration's seeds."""
        if self.pruning is None or not self.parent_run_id:
            return
        if not self.reads_store and not self.pruning.per_seed:
            return  # the callbacks told the mirror every curve this search has
        objective = self.cfg.tuner.objective
        since = None if self.pruning.per_seed else self._pruning_read_ms
        runs = self.tracker.trial_runs(
            self.parent_run_id, status=Status.FINISHED, ended_since_ms=since
        )
        if not self.pruning.per_seed:
            ends = [r.end_time for r in runs if r.end_time is not None]
            if ends:  # ">=" next time: a run ending in the same millisecond is not lost
                self._pruning_read_ms = max(ends + [self._pruning_read_ms or 0])
            runs = [r for r in runs if (r.config_hash or r.run_id) not in self.pruning.known]
        self.pruning.add(
            curves_from_runs(
                runs,
                lambda run_id: self.tracker.metric_history(run_id, objective),
                objective,
                self.pruning.per_seed,
            )
        )

    def spool(self) -> ArtifactSpool:
        """This process's artifact spool: `<project>/spool/<worker or main>/`, so a resumed
        search (a restarted worker) uploads what its killed predecessor left."""
        if self._spool is None:
            folder = Path(self.project_dir) / "spool" / (self.worker_id or "main")
            if self.cfg.tracking.background_artifacts:
                self._spool = artifact_spool(self.cfg, self.tracker, folder)
            else:  # inline, after what a killed background search left here
                self._spool = artifact_spool(self.cfg, self.tracker, None)
                self._spool.finish_left(folder)
        return self._spool

    def close_spool(self) -> None:
        """Every artifact of this process's trials uploaded (or kept for the next one)."""
        if self._spool is not None:
            self._spool.close()

    def _logging_for(self, data: PreparedData) -> TrialLogging:
        """Trial logging on the search's data, or on a replicate's own split."""
        if data is self.data:
            logging = self.logging
        else:
            if data.fingerprint not in self._split_logging:
                self._split_logging[data.fingerprint] = TrialLogging.for_search(
                    self.cfg, data, self.tracker
                )
            logging = self._split_logging[data.fingerprint]
        logging.spool = self.spool()
        return logging

    def trial_number(self, trial_id: str) -> int:
        """1, 2, ... per configuration: keras-tuner's own trial id + 1 (ids are "00", "01",
        ... from the oracle, so cluster workers and resumed searches agree on numbers)."""
        if str(trial_id).isdigit():
            return int(trial_id) + 1
        known = {r["trial_id"]: r["trial"] for r in self.rows}
        return known.get(trial_id) or max(known.values(), default=0) + 1

    # keras-tuner calls this once per trial (one configuration, every seed).
    def run_trial(self, trial, *args, **kwargs):
        """An outage anywhere in a trial (also in a read before training, such as the
        pruning sync) stops the search: keras-tuner would record any other error as a
        FAILED trial, go on, and a resumed search would never run that trial again."""
        try:
            return self._run_configuration(trial)
        except TrackingOutage as err:
            raise TrackingLost(str(err)) from None

    def _run_configuration(self, trial) -> dict[str, float]:
        values = active_values(trial.hyperparameters)
        model_settings, train = trial_settings(self.cfg, values)
        seeds = seeds_of(self.cfg, train)
        number = self.trial_number(trial.trial_id)
        shown = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        total = self.cfg.tuner.max_trials if self.cfg.tuner.kind != TunerKind.hyperband else "?"
        several = f"  x {len(seeds)} seeds" if len(seeds) > 1 else ""
        progress.say(f"[trial {number}/{total}] {progress.format_params(shown)}{several}")
        group = group_hash(model_settings, train, self.data.fingerprint)
        objective = self.cfg.tuner.objective
        by_seed = None  # wilcoxon: the configuration's Optuna trial, one step per seed
        if self.pruning is not None and self.pruning.per_seed:
            self._sync_pruning()
            by_seed = self.pruning.start(f"group:{group}")
        scores, pruned = [], False
        for i, s in enumerate(seeds):
            scores.append(
                self._run_replicate(
                    trial, values, model_settings, replace(train, seed=s), number, group
                )
            )
            if by_seed is not None and i + 1 < len(seeds):
                if self.pruning.report(by_seed, s, scores[-1][objective]):
                    pruned = True
                    progress.say(
                        f"    pruned: {len(seeds) - i - 1} seed(s) skipped "
                        "(Wilcoxon against the best configuration)"
                    )
                    break
        metrics = mean_scores(scores)
        if by_seed is not None:
            self.pruning.finish(by_seed, metrics[objective], pruned)
        self._report_score(number, metrics, len(scores))
        return metrics

    def _run_replicate(
        self, trial, values: dict, model_settings: dict, train: TrainConfig, number: int, group: str
    ) -> dict[str, float]:
        """One seed of one configuration: its own child run (never run or logged twice)."""
        seed = int(train.seed)
        key = replicate_key(values, seed, self.data.fingerprint)
        done = self._finished_before(key)
        if done is not None:  # finished and logged before a crash: its score, no retraining
            progress.say(f"    seed {seed}: already finished (run {done['run_id']})")
            return {k: float(done[k]) for k in VALIDATION_METRICS}
        variant = variant_label(model_settings)
        row = new_row(number, trial.trial_id, seed, variant, group, key, values)
        self.rows.append(row)
        several = replicated(self.cfg)
        if several:
            progress.say(f"  seed {seed}")
        data = replicate_data(self.cfg, self.data, seed)
        table = trial_vectors(self.cfg, data, model_settings)
        spec = TrialSpec.of(
            values, model_settings, train, seed, data, vectors=table,
            split_seed=split_seed_of(self.cfg, seed), group=group,
        )  # fmt: skip
        shown_seed = seed if several else None
        name = trial_run_name(
            number, variant, model_settings["units"], train.learning_rate, shown_seed
        )
        started = time.perf_counter()
        pruning = None  # per-epoch pruning: this replicate's callback
        if self.pruning is not None and not self.pruning.per_seed:
            self._sync_pruning()
            pruning = PruningCallback(self.pruning, key)
        metrics: dict[str, float] = {}
        try:
            metrics = self.runner.run(
                spec,
                name,
                self._replicate_tags(trial.trial_id, number, spec, key, variant),
                f"trial {number} ({variant}, seed {seed})",
                callbacks=[pruning] if pruning else (),
                opened=lambda run_id: row.update(run_id=run_id),
                done=lambda trained: self._replicate_done(trial, spec, row, trained, pruning),
            )
        except TrackingOutage as err:  # not this trial's fault: run_trial stops the search
            row["error"] = one_line(err)
            raise
        except Exception as err:
            failure = self._replicate_failed(row, err)
            raise failure from (None if isinstance(failure, TrialDiskFull) else err)
        finally:
            if pruning is not None:
                pruning.close(metrics.get(self.cfg.tuner.objective))
        row.update(
            metrics,
            status=Status.FINISHED,
            seconds=round(time.perf_counter() - started, 2),
            rss_mb=round(rss_mb(), 1),
        )
        return metrics

    def _replicate_tags(
        self, trial_id: str, number: int, spec: TrialSpec, key: str, variant: str
    ) -> dict[str, Any]:
        return {
            Tag.SEARCH_ID: self.search_id,
            Tag.TRIAL_ID: trial_id,
            Tag.TRIAL_NUMBER: number,
            Tag.CONFIG_HASH: key,
            Tag.GROUP: spec.group,
            Tag.DATA_FINGERPRINT: spec.data.fingerprint,
            Tag.DATA: self.data.name,
            Tag.SEED: spec.seed,
            Tag.POOLING: spec.model["pooling"],
            Tag.VARIANT: variant,
            Tag.KIND: Kind.TRIAL,
            **({Tag.WORKER: self.worker_id} if self.worker_id else {}),
            **({Tag.VECTORS: spec.vectors.fingerprint[:16]} if spec.vectors is not None else {}),
        }

    def _replicate_done(
        self, trial, spec: TrialSpec, row: dict, trained: TrainedTrial, pruning
    ) -> None:
        """On the replicate's run, its model still leased: pruning tags, the row's
        figures, the first seed's weights."""
        if pruning is not None and pruning.pruned_at is not None:
            stopped = pruning.pruned_at + 1
            self.tracker.set_tags({Tag.PRUNED: "true", Tag.PRUNED_EPOCH: stopped})
            row["pruned"] = stopped
            progress.say(f"    pruned after epoch {stopped} ({self.cfg.tuner.pruning})")
        row["fit_seconds"] = round(trained.fit_seconds, 3)
        row["diagnostics_seconds"] = round(trained.diagnostics_seconds, 3)
        row[Metric.PARAM_COUNT] = trained.model.count_params()
        if spec.seed == seeds_of(self.cfg, spec.train)[0]:
            self.save_model(trial.trial_id, trained.model)  # the first seed's weights

    def _replicate_failed(self, row: dict, err: Exception) -> Exception:
        """What keras-tuner is told of a failed replicate: a full disk keeps the trial for
        the resume (its run tagged `interrupted`); anything else is a FAILED trial."""
        if disk_full(err):  # not this trial's fault: its run is left to the resume
            row["error"] = line = disk_full_line(err, written_folders(self.cfg))
            if row.get("run_id"):
                with contextlib.suppress(Exception):  # the store may be on that disk
                    self.tracker.set_run_tag(row["run_id"], Tag.INTERRUPTED, "true")
            return TrialDiskFull(line)
        first = one_line(err)
        row["error"] = first
        progress.say(f"    FAILED: {first}")
        return kt.errors.FailedTrialError(first)

    def _finished_before(self, key: str) -> dict[str, Any] | None:
        """The summary row of a FINISHED run of this replicate (same search, configuration,
        seed and data), from this process's rows or else the store: a cluster worker (or a
        chief killed after a run reached FINISHED but before the oracle heard of it) has
        no rows of the runs other processes logged."""
        for row in self._rows_of(key):
            if row["status"] == Status.FINISHED:
                return row
        if not self.parent_run_id or not self.reads_store:
            return None
        run = self.tracker.finished_replicate(self.parent_run_id, key)
        if run is None or not all(k in run.metrics for k in VALIDATION_METRICS):
            return None
        row = trial_row(run)
        self.rows.append(row)
        return row

    def _rows_of(self, key: str) -> list[dict[str, Any]]:
        """This process's rows of one replicate key, from an index that takes in the rows
        appended since the last lookup (or a list assigned anew): a lookup costs the same
        at trial 500 as at trial 5. Rows change status in place, so they are indexed as
        soon as they exist."""
        if self._indexed is not self.rows:
            self._indexed, self._indexed_count, self._rows_by_key = self.rows, 0, {}
        for row in self.rows[self._indexed_count :]:
            self._rows_by_key.setdefault(row.get("config_hash"), []).append(row)
        self._indexed_count = len(self.rows)
        return self._rows_by_key.get(key, [])

    def _report_score(self, number: int, metrics: dict[str, float], n_seeds: int) -> None:
        name = self.oracle.objective.name
        score = metrics[name]
        label = f"mean {name} over {n_seeds} seeds" if n_seeds > 1 else name
        if is_better(score, self.best_score, name):
            self.best_score, self.best_number = score, number
        progress.say(
            f"    -> {label}: {score:.4f}   best so far {self.best_score:.4f} "
            f"(trial {self.best_number})"
        )

    def save(self) -> None:
        """keras-tuner's `save`, with its files written atomically (`state_files`)."""
        if not self._is_worker():
            self.oracle.save()
        self._save_own_state()

    def on_trial_end(self, trial) -> None:
        """keras-tuner's `end_trial`, then `save()`, less its second save of the oracle
        (`end_trial` has just saved it): one write of a state that grows with the search
        gone from every pause between trials."""
        self.oracle.end_trial(trial)
        self._save_own_state()

    def _save_own_state(self) -> None:
        """The tuner's own file (a resume reloads the oracle only when it exists)."""
        write_json_atomically(self._get_tuner_fname(), self.get_state())

    def save_model(self, trial_id, model, step=0):
        """Weights only (fast); `load_model` rebuilds the architecture from the trial's hp."""
        path = Path(self.get_trial_dir(trial_id)) / WEIGHTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(path)

    def load_model(self, trial):
        keras.backend.clear_session()
        model = self.hypermodel.build(trial.hyperparameters)
        model.load_weights(Path(self.get_trial_dir(trial.trial_id)) / WEIGHTS_FILE)
        return model
