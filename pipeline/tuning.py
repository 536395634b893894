"""keras-tuner search where every trial is a nested MLflow run.

`TrackedTuner.run_trial` is keras-tuner's own extension point: it trains one
trial and logs it as a child of the search's parent run (callbacks given to
`search()` would be deep-copied, so per-trial logging lives here). `run_search`
ties data, tuner and tracking together and returns a summary.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
from keras_tuner.src import config as kt_config
from omegaconf import DictConfig, OmegaConf

from pipeline import progress
from pipeline.attention_report import AttentionReporter, variant_name
from pipeline.cli import hydra_overrides
from pipeline.config import OBJECTIVES, config_hash, flatten, search_space_dims, to_plain
from pipeline.data import PreparedData, prepare
from pipeline.errors import SearchError, one_line
from pipeline.hypermodel import SearchSpaceHyperModel, active_values, trial_settings
from pipeline.ledger import (
    METRIC_KEYS,
    comparable_hash,
    per_trial,
    plan_search,
    previous_records,
)
from pipeline.model import build_model
from pipeline.plots import comparison_figure
from pipeline.tracking import Tracker
from pipeline.training import evaluate
from pipeline.trial import make_deterministic, train_and_log


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


def make_oracle(tuner: DictConfig) -> kt.Oracle:
    objective = kt.Objective(tuner.objective, direction=OBJECTIVES[tuner.objective])
    common = dict(
        objective=objective,
        # keras-tuner replaces a falsy seed (0) with a random one: shift by one so that
        # every tuner.seed, 0 included, samples the same trials on every run.
        seed=tuner.seed + 1,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=tuner.max_consecutive_failed_trials,
    )
    if tuner.kind == "random":
        return kt.oracles.RandomSearchOracle(max_trials=tuner.max_trials, **common)
    if tuner.kind == "grid":
        return kt.oracles.GridSearchOracle(max_trials=tuner.max_trials, **common)
    if tuner.kind == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(
            max_trials=tuner.max_trials,
            num_initial_points=tuner.num_initial_points,
            alpha=tuner.alpha,
            beta=tuner.beta,
            **common,
        )
    if tuner.kind == "hyperband":
        return kt.oracles.HyperbandOracle(
            max_epochs=tuner.max_epochs,
            factor=tuner.factor,
            hyperband_iterations=tuner.hyperband_iterations,
            **common,
        )
    raise SearchError(f"tuner.kind: unknown tuner '{tuner.kind}'")


class TrackedTuner(kt.Tuner):
    """A keras-tuner Tuner (any oracle) whose trials are MLflow child runs."""

    def __init__(
        self,
        oracle,
        hypermodel,
        *,
        cfg: DictConfig,
        data: PreparedData,
        tracker: Tracker,
        search_id: str,
        **kwargs,
    ):
        super().__init__(oracle, hypermodel, **kwargs)
        self.cfg = cfg
        self.data = data
        self.tracker = tracker
        self.search_id = search_id
        self.records: list[dict[str, Any]] = []
        self.attention = AttentionReporter(cfg.attention, data, tracker)
        self.best_score: float | None = None
        self.best_number: int | None = None
        self.worker_id: str | None = None  # set on cluster workers, tagged on their runs

    def _trial_number(self, trial_id: str) -> int:
        """1, 2, ... per configuration: keras-tuner's own trial id + 1 (ids are "00", "01",
        ... from the oracle, so cluster workers and resumed searches agree on numbers)."""
        if str(trial_id).isdigit():
            return int(trial_id) + 1
        known = {r["trial_id"]: r["trial"] for r in self.records}
        return known.get(trial_id) or max(known.values(), default=0) + 1

    # keras-tuner calls this once per trial (one configuration, every seed).
    def run_trial(self, trial, *args, **kwargs):
        values = active_values(trial.hyperparameters)
        model_settings, train = trial_settings(self.cfg, values)
        seeds = list(self.cfg.search.seeds or [int(train["seed"])])
        number = self._trial_number(trial.trial_id)
        shown = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        total = self.cfg.tuner.max_trials if self.cfg.tuner.kind != "hyperband" else "?"
        replicates = f"  x {len(seeds)} seeds" if len(seeds) > 1 else ""
        progress.say(f"[trial {number}/{total}] {progress.format_params(shown)}{replicates}")
        # The configuration, whatever the seed: every model/train setting after the trial's
        # values (so searches with other epochs or batch sizes never share a group).
        group = config_hash(
            {
                "model": model_settings,
                "train": {k: v for k, v in train.items() if k != "seed"},
                "data": self.data.fingerprint,
            }
        )
        scores = [
            self._run_replicate(trial, values, model_settings, {**train, "seed": s}, number, group)
            for s in seeds
        ]
        metrics = {k: float(np.mean([m[k] for m in scores])) for k in METRIC_KEYS}
        self._report_score(number, metrics, len(scores))
        return metrics

    def _run_replicate(
        self, trial, values: dict, model_settings: dict, train: dict, number: int, group: str
    ) -> dict[str, float]:
        """One seed of one configuration: its own child run (never run or logged twice)."""
        seed = int(train["seed"])
        key = config_hash({"hp": values, "seed": seed, "data": self.data.fingerprint})
        done = next(
            (r for r in self.records if r.get("config_hash") == key and r["status"] == "FINISHED"),
            None,
        )
        if done is not None:  # finished and logged before a crash
            progress.say(f"    seed {seed}: already finished (run {done['run_id']})")
            return {k: float(done[k]) for k in METRIC_KEYS}
        variant = variant_name(model_settings)
        several = bool(self.cfg.search.seeds) and len(self.cfg.search.seeds) > 1
        record: dict[str, Any] = {
            "trial": number,
            "seed": seed,
            "variant": variant,
            "trial_id": trial.trial_id,
            "group": group,
            "config_hash": key,
            "status": "FAILED",
            **values,
        }
        self.records.append(record)
        if several:
            progress.say(f"  seed {seed}")
        tags = {
            "search_id": self.search_id,
            "trial_id": trial.trial_id,
            "trial_number": number,
            "config_hash": key,
            "group": group,
            "data_fingerprint": self.data.fingerprint,
            "data": self.data.name,
            "seed": seed,
            "pooling": model_settings["pooling"],
            "variant": variant,
            "kind": "trial",
            **({"worker": self.worker_id} if self.worker_id else {}),
        }
        name = f"trial-{number:03d}" + (f"-seed{seed}" if several else "")
        started = time.perf_counter()
        try:
            with self.tracker.run(name, tags=tags, nested=True) as run:
                record["run_id"] = run.info.run_id
                self.tracker.log_params(values)
                self.tracker.log_dict(
                    {
                        "hyperparameters": values,
                        "seed": seed,
                        "executions_per_trial": self.cfg.tuner.executions_per_trial,
                        "data_fingerprint": self.data.fingerprint,
                        "group": group,
                    },
                    "trial.json",
                )
                trained = train_and_log(
                    self.cfg,
                    self.data,
                    self.tracker,
                    self.attention,
                    lambda: self.hypermodel.build(trial.hyperparameters),
                    train,
                    f"trial {number} ({variant}, seed {seed})",
                )
                metrics = trained.metrics
                record["fit_seconds"] = round(trained.fit_seconds, 3)
                if not self.cfg.search.seeds or seed == int(self.cfg.search.seeds[0]):
                    self.save_model(trial.trial_id, trained.model)  # the first seed's weights
                del trained
        except Exception as err:
            first = one_line(err)
            record["error"] = first
            progress.say(f"    FAILED: {first}")
            raise kt.errors.FailedTrialError(first) from err
        record.update(
            metrics,
            status="FINISHED",
            seconds=round(time.perf_counter() - started, 2),
            rss_mb=round(rss_mb(), 1),
        )
        return metrics

    def _report_score(self, number: int, metrics: dict[str, float], n_seeds: int) -> None:
        name = self.oracle.objective.name
        score = metrics[name]
        label = f"mean {name} over {n_seeds} seeds" if n_seeds > 1 else name
        better = self.best_score is None or (
            score > self.best_score if OBJECTIVES[name] == "max" else score < self.best_score
        )
        if better:
            self.best_score, self.best_number = score, number
        progress.say(
            f"    -> {label}: {score:.4f}   best so far {self.best_score:.4f} "
            f"(trial {self.best_number})"
        )

    def _weights_path(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "best.weights.h5"

    def save_model(self, trial_id, model, step=0):
        """Weights only (fast); `load_model` rebuilds the architecture from the trial's hp."""
        path = self._weights_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(path)

    def load_model(self, trial):
        keras.backend.clear_session()
        model = self.hypermodel.build(trial.hyperparameters)
        model.load_weights(self._weights_path(trial.trial_id))
        return model


@dataclass
class SearchOutcome:
    search_id: str
    parent_run_id: str
    trials: pd.DataFrame
    best: dict[str, Any] | None
    test_metrics: dict[str, float]
    ui_command: str
    exhausted: bool


def search_parent_tags(cfg: DictConfig, data: PreparedData, name: str, comparable: str) -> dict:
    return {
        "search_id": name,
        "kind": "search",
        "data_fingerprint": data.fingerprint,
        "comparable_hash": comparable,
        "tuner": cfg.tuner.kind,
        "objective": cfg.tuner.objective,
        "cluster": cfg.cluster.mode,
        "command": " ".join(["python -m pipeline.search", *hydra_overrides()]),
    }


def log_search_setup(cfg: DictConfig, data: PreparedData, tracker: Tracker) -> None:
    """What a new search records once on its parent run (params are immutable in MLflow)."""
    tracker.log_params(flatten(to_plain(cfg)))
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    tracker.log_dict(search_space_dims(cfg.search_space), "search_space.json")
    tracker.log_text("\n".join(data.vocab), "vocab.txt")
    tracker.log_environment()


def make_tuner(
    cfg: DictConfig, data: PreparedData, tracker: Tracker, name: str, overwrite: bool
) -> TrackedTuner:
    return TrackedTuner(
        make_oracle(cfg.tuner),
        SearchSpaceHyperModel(cfg, len(data.vocab), data.n_classes),
        cfg=cfg,
        data=data,
        tracker=tracker,
        search_id=name,
        directory=cfg.tuner.directory,
        project_name=name,
        overwrite=overwrite,
        executions_per_trial=cfg.tuner.executions_per_trial,
    )


def drive(tuner: TrackedTuner, cfg: DictConfig) -> None:
    """tuner.search(), with keras-tuner's failure limit turned into one clear line."""
    # Everything alive now (TensorFlow, MLflow, the data) lives for the whole search:
    # freezing it keeps each trial's clear_session() garbage collection from scanning
    # ~700k long-lived objects (0.3 s per trial on this machine, down to ~0.02 s).
    gc.collect()
    gc.freeze()
    try:
        tuner.search(verbose=0)
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        last = tuner.records[-1].get("error", "") if tuner.records else ""
        raise SearchError(
            f"search stopped: {cfg.tuner.max_consecutive_failed_trials} consecutive trials "
            f"failed (tuner.max_consecutive_failed_trials); last error: {last}"
        ) from None


def best_model_path(cfg: DictConfig, name: str, trial_id: str) -> Path:
    """Where TrackedTuner.save_model put a trial's weights (keras-tuner's trial folder)."""
    return Path(cfg.tuner.directory) / name / f"trial_{trial_id}" / "best.weights.h5"


def finish_search(
    cfg: DictConfig,
    data: PreparedData,
    tracker: Tracker,
    name: str,
    parent_id: str,
    trials: pd.DataFrame,
    best_values: dict[str, Any],
    best_trial_id: str,
) -> SearchOutcome:
    """On the (active) parent run: comparison figure, best trial, test metrics."""
    finished = trials[trials["status"] == "FINISHED"]
    tracker.log_figure(comparison_figure(finished, cfg.tuner.objective), "comparison.png")
    table = per_trial(trials)
    best_row = table[table["trial_id"] == best_trial_id].iloc[0].to_dict()
    tracker.set_tags({"best_run_id": best_row["run_id"], "best_trial_id": best_trial_id})
    tracker.set_tags({f"best.{k}": v for k, v in best_values.items()})
    tracker.log_metrics({f"best_{k}": best_row[k] for k in METRIC_KEYS})
    test_metrics: dict[str, float] = {}
    if cfg.search.evaluate_test and len(data.y["test"]):
        model_settings, train = trial_settings(cfg, best_values)
        keras.backend.clear_session()
        model = build_model(
            model_settings,
            len(data.vocab),
            data.n_classes,
            learning_rate=train["learning_rate"],
            clipnorm=train["clipnorm"],
        )
        model.load_weights(best_model_path(cfg, name, best_trial_id))
        test_metrics, _ = evaluate(model, data, "test", train, prefix="test_")
        tracker.log_metrics(test_metrics)
    return SearchOutcome(
        search_id=name,
        parent_run_id=parent_id,
        trials=trials,
        best=best_row,
        test_metrics=test_metrics,
        ui_command=tracker.ui_command(),
        exhausted=exhausted_space(cfg, trials),
    )


def count_trials(tracker: Tracker, trials: pd.DataFrame) -> int:
    done = int((trials["status"] == "FINISHED").sum()) if not trials.empty else 0
    tracker.log_metrics({"trials_finished": done, "trials_failed": len(trials) - done})
    if done == 0:
        raise SearchError("no trial finished; see the FAILED child runs for their errors")
    return done


def exhausted_space(cfg: DictConfig, trials: pd.DataFrame) -> bool:
    n_configs = trials["trial"].nunique() if not trials.empty else 0
    return cfg.tuner.kind in ("grid", "random", "bayesian") and n_configs < cfg.tuner.max_trials


def run_search(
    cfg: DictConfig, data: PreparedData | None = None, tracker: Tracker | None = None
) -> SearchOutcome | None:
    """Prepare data, open (or reopen) the parent run, let keras-tuner drive the trials.

    As a cluster chief it only serves the oracle; as a worker it trains the trials the
    chief hands out under the launcher's parent run (both return None).
    """
    kt_config.DEBUG = bool(cfg.search.verbose)  # keras-tuner prints every failed trial's traceback
    data = data or prepare(cfg.data)
    if cfg.cluster.role == "worker" and cfg.cluster.threads_per_worker:
        limit_threads(cfg.cluster.threads_per_worker)  # before TensorFlow runs any op
    make_deterministic(cfg.train.deterministic)
    if tracker is None:
        tracker = Tracker.from_config(cfg.tracking)
        tracker.connect()
    role = cfg.cluster.role
    if role is not None:
        return serve_cluster_role(cfg, data, tracker, role)
    comparable = comparable_hash(cfg, data.fingerprint)
    plan = plan_search(cfg, tracker, comparable)
    name, resuming = plan.name, plan.parent_id is not None
    progress.say(
        f"data: {data.name}  train/val/test = {len(data.y['train'])}/"
        f"{len(data.y['val'])}/{len(data.y['test'])}  classes = {data.n_classes}  "
        f"vocab = {len(data.vocab)}  fingerprint {data.fingerprint[:12]}"
    )
    if resuming:
        closed = tracker.close_interrupted(plan.parent_id)
        if closed:
            progress.say(
                f"resuming '{name}': {closed} interrupted trial run(s) marked FAILED; "
                "keras-tuner re-runs them once"
            )
    tags = search_parent_tags(cfg, data, name, comparable)
    with tracker.run(name, tags=tags, run_id=plan.parent_id) as parent:
        parent_id = parent.info.run_id
        if not resuming:
            log_search_setup(cfg, data, tracker)
        progress.say(
            f"search '{name}' ({'resumed' if resuming else 'new'}): tuner={cfg.tuner.kind} "
            f"objective={cfg.tuner.objective} max_trials={cfg.tuner.max_trials}  "
            f"parent run {parent_id}"
        )
        tuner = make_tuner(cfg, data, tracker, name, overwrite=not resuming)
        if resuming:
            tuner.records = previous_records(tracker, parent_id)
        try:
            drive(tuner, cfg)
        finally:
            trials = pd.DataFrame(tuner.records)
            if not trials.empty:
                tracker.log_table_csv(trials, "search_summary.csv")
        count_trials(tracker, trials)
        best_trial = tuner.oracle.get_best_trials(1)[0]
        return finish_search(
            cfg,
            data,
            tracker,
            name,
            parent_id,
            trials,
            active_values(best_trial.hyperparameters),
            best_trial.trial_id,
        )


def silence_condition_proto_print() -> None:
    """keras-tuner 1.4 prints a conditional hyperparameter's first value every time it
    sends it over gRPC (a leftover `print` in `conditions.Parent.to_proto`)."""
    import contextlib
    import io

    from keras_tuner.src.engine import conditions

    original = conditions.Parent.to_proto
    if getattr(original, "silenced", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto.silenced = True
    conditions.Parent.to_proto = to_proto


def limit_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def serve_cluster_role(cfg: DictConfig, data: PreparedData, tracker: Tracker, role: str) -> None:
    """A process the cluster launcher started: the chief serves the oracle over gRPC (until
    the space or max_trials is used up); a worker trains what the chief hands out."""
    name = cfg.search.name
    silence_condition_proto_print()
    if role == "chief":
        tuner = make_tuner(cfg, data, tracker, name, overwrite=True)
        progress.say("chief: oracle serving")
        drive(tuner, cfg)  # keras-tuner's chief: blocks until every worker is done
        return None
    tracker.parent_run_id = cfg.cluster.parent_run_id
    tuner = make_tuner(cfg, data, tracker, name, overwrite=False)
    tuner.worker_id = cfg.cluster.worker_id
    drive(tuner, cfg)
    return None
