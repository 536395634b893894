"""`search.seeds=adaptive` in a search: keras-tuner's trials give every configuration its
first seeds, then the configurations race (`pipeline.search.racing`): each further seed is
one more child run of its configuration, trained and logged by the tuner's own replicate
code, so it is tagged and reproducible as any other. A grid search races every
configuration; random, Bayesian and Hyperband searches race their `search.race.top_k`
best. A replicate already logged (a resumed search) is read back, never trained again:
the race replays its rounds on the same evidence to where it stopped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import TunerKind, minimised
from pipeline.search.outcome import per_trial, ranked
from pipeline.search.racing import Race, RaceSettings, run_race
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


def race_search(tuner, cfg: DictConfig, tracker: TrackingStore, parent_id: str) -> Race | None:
    """Race the search's configurations on more seeds where their verdicts are undecided;
    the race is recorded on the parent run (`race.json`, `race_*` metrics)."""
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
    for row in tuner.rows:  # the first seeds, trained by keras-tuner's trials just now
        if row.get("status") == Status.FINISHED and row["trial_id"] in trials:
            if int(row["seed"]) < settings.first:
                seeds = race.predictions.setdefault(str(row["trial_id"]), {})
                seeds[int(row["seed"])] = tracker.read_predictions(row["run_id"])
    progress.say(f"race: {len(trials)} configurations, up to {settings.most} seeds each")
    run_race(race, sorted(trials), lambda label, seed: _replicate(tuner, trials[label], seed),
             say=lambda line: progress.say(f"race {line}"))  # fmt: skip
    progress.say(f"race: stopped: {race.stopped}; {race.trainings} trainings")
    names = {str(r["trial_id"]): str(r.get("variant", "")) for r in tuner.rows}
    tracker.log_dict(race_record(race, {k: names.get(k, k) for k in trials}), Artifact.RACE)
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
    cfg = tuner.cfg
    values = active_values(trial.hyperparameters)
    model_settings, train = trial_settings(cfg, values)
    group = group_hash(model_settings, train, tuner.data.fingerprint)
    number = tuner._trial_number(trial.trial_id)
    try:
        tuner._run_replicate(
            trial, values, model_settings, replace(train, seed=seed), number, group
        )
    except kt.errors.FailedTrialError:
        return None
    key = replicate_key(values, seed, tuner.data.fingerprint)
    row = next(r for r in tuner._rows_of(key) if r.get("status") == Status.FINISHED)
    return tuner.tracker.read_predictions(row["run_id"])
