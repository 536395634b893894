"""`run_search(cfg) -> SearchOutcome`: one search, start to end, whatever runs its trials.

The search's lifecycle, once: open it (new or resumed, the data and vectors said), open or
reopen its parent run, fit the references, let an executor run the trials, then finish on
the parent (`pipeline.search.finish`). The executor is keras-tuner's loop in this process
(`InProcess`, the default) or the cluster's chief and workers (`pipeline.cluster`).
Signals, exit codes, CPU pinning and `gc.freeze()` belong to the caller (the command).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from keras_tuner.src import config as kt_config
from omegaconf import DictConfig, OmegaConf

from pipeline import progress
from pipeline.config import flatten, hydra_overrides, search_space_dims, to_plain, typed_data
from pipeline.data import PreparedData, prepare
from pipeline.runtime.redaction import redact
from pipeline.search.driver import drive, make_tuner
from pipeline.search.finish import best_configuration, count_trials, finish_search, log_summary
from pipeline.search.ledger import (
    SearchPlan,
    comparable_hash,
    plan_search,
    plan_search_name,
    previous_rows,
)
from pipeline.search.outcome import SearchOutcome
from pipeline.search.references import ReferencePrefit, run_references
from pipeline.search.replicates import adaptive
from pipeline.search.space import search_vectors
from pipeline.search.state_files import check_state_files
from pipeline.search.tuner import TrackedTuner
from pipeline.tracking import Artifact, Kind, Tag
from pipeline.tracking.protocol import TrackingStore
from pipeline.tracking.store import open_tracker
from pipeline.training.fit import enable_determinism


def search_parent_tags(cfg: DictConfig, data: PreparedData, name: str, comparable: str) -> dict:
    return {
        Tag.SEARCH_ID: name,
        Tag.KIND: Kind.SEARCH,
        Tag.DATA_FINGERPRINT: data.fingerprint,
        Tag.COMPARABLE_HASH: comparable,
        Tag.TUNER: cfg.tuner.kind,
        Tag.OBJECTIVE: cfg.tuner.objective,
        Tag.CLUSTER: cfg.cluster.mode,
        Tag.COMMAND: " ".join(["python -m pipeline.search", *hydra_overrides()]),
        **({Tag.DATA_LEAK: leak} if data.audit and (leak := data.audit.leak_tag()) else {}),
    }


def log_search_setup(cfg: DictConfig, data: PreparedData, tracker: TrackingStore) -> None:
    """What a new search records once on its parent run (params are immutable in MLflow)."""
    tracker.log_params(flatten(to_plain(cfg)))
    tracker.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), Artifact.CONFIG)
    tracker.log_dict(search_space_dims(cfg.search_space), Artifact.SEARCH_SPACE)
    tracker.log_text("\n".join(data.vocab), Artifact.VOCAB)
    if data.audit is not None:
        tracker.log_dict(data.audit.report, Artifact.DATA_AUDIT)
        tracker.log_metrics(data.audit.metrics())
        if issues := (data.audit.report.get("label_issues") or {}).get("rows"):
            tracker.log_table(pd.DataFrame(issues), Artifact.LABEL_ISSUES)
    tracker.log_environment()


@dataclass
class SearchOpening:
    """A search about to open its parent run: new or resumed, and with which vectors."""

    plan: SearchPlan
    comparable: str
    vectors: list  # VectorTable per embedding source a trial can use


def open_search(cfg: DictConfig, data: PreparedData, tracker: TrackingStore) -> SearchOpening:
    """What every search (one process or a cluster) does before its parent run opens:
    the data line, the word vectors (built once, their coverage said), new or resumed."""
    progress.say(describe_data(data))
    if data.audit is not None:
        progress.say(data.audit.line())
        for warning in data.audit.warnings:
            progress.say(f"warning: {warning}")
    tables = search_vectors(cfg, data)
    for table in tables:
        progress.say(table.line())
    comparable = comparable_hash(cfg, data.fingerprint, tables)
    if cfg.cluster.role is None:  # one live process per search (held already by the CLI)
        cfg.search.name = plan_search_name(cfg, tracker)
    plan = plan_search(cfg, tracker, comparable)
    if plan.resuming:  # before anything is marked: a refused resume changes nothing
        check_state_files(Path(cfg.tuner.directory) / plan.name, plan.name)
    return SearchOpening(plan, comparable, tables)


@contextmanager
def parent_run(
    cfg: DictConfig, data: PreparedData, tracker: TrackingStore, opening: SearchOpening
) -> Iterator[str]:
    """Open a new parent run or reopen the one a resume continues; yields its id. A new
    search records its set-up once (params are immutable in MLflow)."""
    plan = opening.plan
    tags = search_parent_tags(cfg, data, plan.name, opening.comparable)
    with tracker.run(plan.name, tags=tags, run_id=plan.parent_id) as parent:
        if not plan.resuming:
            log_search_setup(cfg, data, tracker)
            for table in opening.vectors:
                tracker.log_metrics(table.metrics())
        yield parent.info.run_id


def describe_data(data: PreparedData) -> str:
    return (
        f"data: {data.name}  train/val/test = {len(data.y['train'])}/"
        f"{len(data.y['val'])}/{len(data.y['test'])}  classes = {data.n_classes}  "
        f"vocab = {len(data.vocab)}  fingerprint {data.fingerprint[:12]}"
        + "".join(f"  ({note})" for note in data.notes)
    )


class Executor(Protocol):
    """What runs a search's trials once its parent run is open."""

    def prepare(self, plan: SearchPlan) -> None:
        """Before anything is marked: where the trials will run; refuse a resume this
        executor cannot continue."""

    def describe(self, parent_id: str) -> list[str]:
        """Lines printed after the search's opening line."""

    def run(self, parent_id: str, plan: SearchPlan) -> list[dict] | None:
        """Run the trials; their summary rows, or None when other processes ran them (the
        store holds their rows)."""

    def run_racers(self, count: int) -> None:
        """An executor whose trials ran in other processes (`run` gave None): `count`
        processes that train a race's round from its queue (`pipeline.search.race_queue`),
        returning when all have ended."""

    def rows_so_far(self) -> list[dict]:
        """The rows this process holds when the search stops on an error."""

    def settle(self) -> None:
        """Every trial's artifacts present (before the registry points at a model)."""

    def close(self) -> None:
        """Release what the executor holds (spools, processes); also after an error."""


class InProcess:
    """keras-tuner's own loop in this process (the default executor)."""

    def __init__(self, cfg: DictConfig, data: PreparedData, tracker: TrackingStore):
        self.cfg, self.data, self.tracker = cfg, data, tracker
        self.tuner: TrackedTuner | None = None

    def prepare(self, plan: SearchPlan) -> None:
        pass

    def describe(self, parent_id: str) -> list[str]:
        return []

    def run(self, parent_id: str, plan: SearchPlan) -> list[dict]:
        tuner = make_tuner(self.cfg, self.data, self.tracker, plan.name, not plan.resuming)
        self.tuner = tuner
        tuner.parent_run_id = parent_id
        tuner.reads_store = plan.resuming  # a new parent holds only this process's runs
        if plan.resuming:
            tuner.rows = previous_rows(self.tracker, parent_id)
        drive(tuner, self.cfg, close_spool=False)  # the last uploads overlap the finish
        if adaptive(self.cfg):  # the race's statistics load only for a race
            from pipeline.search.seed_race import race_search

            race_search(tuner, self.cfg, self.tracker, parent_id)
        return tuner.rows

    def run_racers(self, count: int) -> None:
        raise NotImplementedError("an in-process search races in this process")

    def rows_so_far(self) -> list[dict]:
        return self.tuner.rows if self.tuner is not None else []

    def settle(self) -> None:
        if self.tuner is not None:
            self.tuner.close_spool()

    def close(self) -> None:
        self.settle()


def run_and_finish(
    cfg: DictConfig,
    data: PreparedData,
    tracker: TrackingStore,
    executor: Executor,
    plan: SearchPlan,
    parent_id: str,
) -> SearchOutcome:
    """The trials on `executor`, then the search's finish on its parent run."""
    try:
        rows = executor.run(parent_id, plan)
    except BaseException:
        with suppress(Exception):  # the search's own error is the one to tell
            log_summary(tracker, executor.rows_so_far())
        raise
    if rows is None:  # ran in other processes: their runs are in the store
        if adaptive(cfg):  # raced on the executor's processes, from here
            from pipeline.search.seed_race import race_on_racers

            race_on_racers(cfg, data, tracker, parent_id, executor.run_racers)
        rows = previous_rows(tracker, parent_id)
    trials = log_summary(tracker, rows)
    count_trials(tracker, trials)
    best_values, best_trial_id = best_configuration(tracker, trials, cfg.tuner.objective)
    return finish_search(
        cfg, data, tracker, plan.name, parent_id, trials, best_values, best_trial_id,
        before_registry=executor.settle,
    )  # fmt: skip


def run_search(
    cfg: DictConfig,
    data: PreparedData | None = None,
    tracker: TrackingStore | None = None,
    prefit: ReferencePrefit | None = None,
    executor: Executor | None = None,
) -> SearchOutcome:
    """Open (or reopen) the search and its parent run, fit the references, run the trials
    on `executor` (default: this process), finish on the parent. The config is validated
    by the command that composed it (`prefit`: the references' fits, started ahead)."""
    kt_config.DEBUG = bool(cfg.search.verbose)  # keras-tuner prints every failed trial's traceback
    data = data or prepare(typed_data(cfg.data))
    enable_determinism(cfg.train.deterministic)
    tracker = tracker or open_tracker(cfg.tracking)
    executor = executor or InProcess(cfg, data, tracker)
    try:
        opening = open_search(cfg, data, tracker)
        plan = opening.plan
        executor.prepare(plan)
        plan.close_interrupted(tracker)
        with parent_run(cfg, data, tracker, opening) as parent_id:
            opening_lines = [plan.opening_line(cfg, parent_id), *executor.describe(parent_id)]
            progress.say("\n".join(opening_lines))
            references = run_references(cfg, data, tracker, parent_id, plan.name, prefit)
            try:
                outcome = run_and_finish(cfg, data, tracker, executor, plan, parent_id)
            finally:
                executor.settle()
            outcome.references = references
            return outcome
    finally:
        executor.close()
