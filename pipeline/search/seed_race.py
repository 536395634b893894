"""`search.seeds=adaptive` in a search: keras-tuner's trials give every configuration its
first seeds, then the configurations race (`pipeline.search.racing`): each further seed is
one more child run of its configuration, trained and logged by the tuner's own replicate
code, so it is tagged and reproducible as any other. A grid search races every
configuration; random, Bayesian and Hyperband searches race their `search.race.top_k`
best. A replicate already logged (a resumed search) is read back, never trained again:
the race replays its rounds on the same evidence to where it stopped. On a cluster
(`cluster=workers`) the launcher races once keras-tuner's chief and workers are done: each
round's assignments go to `cluster.n_workers` racer processes through a queue file
(`pipeline.search.race_queue`), and their runs are read back from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import TunerKind, minimised
from pipeline.errors import SearchError
from pipeline.search.outcome import per_trial, ranked
from pipeline.search.race_queue import RaceQueue, queue_path
from pipeline.search.racing import Race, RaceSettings, one_by_one, run_race
from pipeline.search.replicates import group_hash, replicate_key
from pipeline.search.space import active_values, trial_settings
from pipeline.tracking import Artifact, Metric, Status
from pipeline.tracking.protocol import TrackingStore


def raced_trials(tuner, cfg: DictConfig) -> dict[str, Any]:
    """The keras-tuner trials that race: every completed one of a grid, else the top_k."""
    done = {
        t.trial_id: t
        for t in tuner.oracle.trials.values()
        if t.status == kt.engine.trial.TrialStatus.COMPLETED
    }
    if cfg.tuner.kind == TunerKind.grid:
        return done
    rows = [r for r in tuner.rows if r.get("status") == Status.FINISHED and r["trial_id"] in done]
    if not rows:
        return {}
    import pandas as pd

    best = ranked(per_trial(pd.DataFrame(rows)), cfg.tuner.objective)
    return {t: done[t] for t in list(best["trial_id"])[: int(cfg.search.race.top_k)]}


def race_search(
    tuner, cfg: DictConfig, tracker: TrackingStore, parent_id: str,
    run_racers: Callable[[int], None] | None = None,
) -> Race | None:  # fmt: skip
    """Race the search's configurations on more seeds where their verdicts are undecided;
    the race is recorded on the parent run (`race.json`, `race_*` metrics). Replicates
    train in this process, or on racer processes (`run_racers(n)`: n of them take the
    round's queue and end when it is empty)."""
    trials = raced_trials(tuner, cfg)
    if len(trials) < 2:
        progress.say("race: fewer than two finished configurations; nothing to race")
        return None
    r, objective = cfg.search.race, cfg.tuner.objective
    scale = 1.0 if minimised(objective) else 100.0
    settings = RaceSettings(int(r.first), int(r.most), r.budget, float(r.margin) / scale,
                            float(r.alpha), float(r.futility))  # fmt: skip
    race = Race(settings, objective, list(range(settings.most)), split_varies=cfg.search.vary_split)
    race.baseline = _baseline_trial(tuner, trials, cfg.search.baseline)
    variants = {str(r["trial_id"]): str(r.get("variant", "")) for r in tuner.rows}
    race.names.update({k: f"trial {tuner.trial_number(k)} {variants.get(k, '')}".rstrip()
                       for k in trials})  # fmt: skip
    for row in tuner.rows:  # the first seeds, trained by keras-tuner's trials just now
        if row.get("status") == Status.FINISHED and row["trial_id"] in trials:
            if int(row["seed"]) < settings.first:
                seeds = race.predictions.setdefault(str(row["trial_id"]), {})
                seeds[int(row["seed"])] = tracker.read_predictions(row["run_id"])
    progress.say(f"race: {len(trials)} configurations, up to {settings.most} seeds each")
    if run_racers is None:
        train_round = one_by_one(lambda label, seed: _replicate(tuner, trials[label], seed))
    else:
        train_round = _on_racers(tuner, trials, run_racers)
    run_race(race, sorted(trials), say=lambda line: progress.say(f"race {line}"),
             train_round=train_round)  # fmt: skip
    progress.say(f"race: stopped: {race.stopped}; {race.trainings} trainings")
    tracker.log_dict(race_record(race, {k: variants.get(k, k) for k in trials}), Artifact.RACE)
    tracker.log_metrics(
        {Metric.RACE_ROUNDS: len(race.rounds), Metric.RACE_TRAININGS: race.trainings}
    )
    return race


def race_record(race: Race, names: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "configurations": names or {},
        "rounds": race.rounds,
        "seeds": race.allocation(),
        "stopped": race.stopped,
        "dropped": sorted(race.dropped),
        "pairs": {
            k: {"against": p.incumbent, "verdict": p.verdict, "seeds": p.seeds, "diff": p.diff}
            for k, p in race.pairs.items()
        },
        "settings": vars(race.settings),
    }


def _baseline_trial(tuner, trials: dict[str, Any], variant: str | None) -> str | None:
    """The raced trial of `search.baseline` (a variant label), if one is raced."""
    if not variant:
        return None
    for row in tuner.rows:
        if row.get("variant") == variant and row["trial_id"] in trials:
            return str(row["trial_id"])
    return None


def _replicate(tuner, trial, seed: int):
    """One seed of a raced configuration through the tuner's replicate code (a logged one
    is read back); its validation predictions, None when it failed."""
    run_id = _replicate_run(tuner, trial, seed)
    return None if run_id is None else tuner.tracker.read_predictions(run_id)


def _replicate_run(tuner, trial, seed: int) -> str | None:
    """The FINISHED run of one seed of a raced configuration, trained unless logged
    before; None when it failed."""
    values = active_values(trial.hyperparameters)
    model_settings, train = trial_settings(tuner.cfg, values)
    group = group_hash(model_settings, train, tuner.data.fingerprint)
    number = tuner.trial_number(trial.trial_id)
    try:
        tuner._run_replicate(
            trial, values, model_settings, replace(train, seed=seed), number, group
        )
    except kt.errors.FailedTrialError:
        return None
    key = replicate_key(values, seed, tuner.data.fingerprint)
    row = next(r for r in tuner._rows_of(key) if r.get("status") == Status.FINISHED)
    return row["run_id"]


def _on_racers(tuner, trials: dict[str, Any], run_racers: Callable[[int], None]):
    """A round trainer on the cluster's racer processes: what the store holds already
    (a resumed race) is read back, the rest goes through the queue."""
    cfg, tracker = tuner.cfg, tuner.tracker
    queue = RaceQueue(queue_path(cfg.tuner.directory, tuner.search_id))

    def train_round(assignments: list[tuple[str, int]]):
        results, todo = {}, []
        for label, seed in assignments:
            key = replicate_key(active_values(trials[label].hyperparameters), seed,
                                tuner.data.fingerprint)  # fmt: skip
            run = tracker.finished_replicate(tuner.parent_run_id, key)
            if run is None:
                todo.append((label, seed))
            else:
                progress.say(f"    trial {tuner.trial_number(label)} seed {seed}: already "
                             f"finished (run {run.run_id})")  # fmt: skip
                results[label, seed] = tracker.read_predictions(run.run_id)
        if todo:
            queue.start_round(todo)
            run_racers(min(int(cfg.cluster.n_workers), len(todo)))
            entries = queue.entries()
            if left := [f"trial {tuner.trial_number(e.trial_id)} seed {e.seed}"
                        for e in entries if e.open]:  # fmt: skip
                raise SearchError(f"race: the racers ended with {', '.join(left)} not trained")
            for item in entries:
                run = None if item.run_id is None else tracker.read_predictions(item.run_id)
                results[item.trial_id, item.seed] = run
        return results

    return train_round


def race_on_racers(
    cfg: DictConfig, data, tracker: TrackingStore, parent_id: str,
    run_racers: Callable[[int], None],
) -> Race | None:  # fmt: skip
    """The race of a cluster search, from the launcher once keras-tuner's chief and
    workers are done: keras-tuner's state reloaded from the chief's project folder, the
    trials' rows from the store."""
    from pipeline.search.ledger import previous_rows

    tuner = _chief_state(cfg, data, tracker)
    tuner.parent_run_id = parent_id
    tuner.rows = previous_rows(tracker, parent_id)
    return race_search(tuner, cfg, tracker, parent_id, run_racers)


def serve_race_queue(cfg: DictConfig, data, tracker: TrackingStore) -> None:
    """A racer process (`cluster.role=racer`): take the round's assignments one at a time
    until none is left, each trained and logged as the tuner's replicate."""
    racer = str(cfg.cluster.worker_id)
    queue = RaceQueue(queue_path(cfg.tuner.directory, cfg.search.name))
    if back := queue.give_back(racer):
        progress.say(f"{racer}: {back} assignment(s) its predecessor left, open again")
    tuner = _chief_state(cfg, data, tracker)
    tuner.worker_id, tuner.parent_run_id = racer, cfg.cluster.parent_run_id
    tuner.spool()  # uploads first what a killed racer of this name left
    try:
        while (item := queue.take(racer)) is not None:
            trial = tuner.oracle.trials[item.trial_id]
            progress.say(f"race: trial {tuner.trial_number(item.trial_id)} seed {item.seed}")
            queue.end(item, _replicate_run(tuner, trial, item.seed))
    finally:
        tuner.close_spool()


def _chief_state(cfg: DictConfig, data, tracker: TrackingStore):
    """A tuner on the search's keras-tuner project with the trials the chief's oracle
    ended (keras-tuner reloads a tuner only from its own id's file: the chief's is
    `chief.json`), for reading: it trains replicates, never a new trial."""
    from pipeline.search.driver import make_tuner

    tuner = make_tuner(cfg, data, tracker, cfg.search.name, overwrite=False)
    tuner.oracle.reload()
    return tuner
