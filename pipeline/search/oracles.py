"""keras-tuner oracles from `tuner.*`: which configuration each trial gets (their state
files written atomically, `state_files`; no per-trial work that grows with the search)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import TunerKind, direction
from pipeline.search.state_files import AtomicStateOracle
from pipeline.search.stopping import STOP_REASON, patience_stop


class TrailingFailureCheck(kt.Oracle):
    """keras-tuner's limit on consecutive failed trials, checked from the newest trial back.

    keras-tuner recounts every ended trial each time one ends, so the pause between trials
    grows with the search. The check runs after each trial ends, so a run of failures long
    enough can only be one that reaches the newest trial: walking back from it until the
    first trial that did not fail gives the same verdict in constant time.
    """

    def _check_consecutive_failures(self) -> None:
        limit = self.max_consecutive_failed_trials
        if not limit:
            return
        failed = 0
        for trial_id in reversed(self.end_order):
            if self.trials[trial_id].status != kt.engine.trial.TrialStatus.FAILED:
                break
            failed += 1
        if failed >= limit:
            # the trial at which keras-tuner's forward count reaches the limit
            trial = self.trials[self.end_order[len(self.end_order) - failed + limit - 1]]
            raise RuntimeError(
                "Number of consecutive failures exceeded the limit "
                f"of {limit}.\n" + (trial.message or "")
            )


class PatienceOracle(kt.Oracle):
    """An oracle that stops the search by `patience_stop` (unset: never). The reason is
    part of the oracle's state (oracle.json), so the finish reads what the oracle decided,
    in the order trials ended, whichever process ran it (`saved_stop_reason`)."""

    stop_patience: int | None = None
    validation_examples: int = 0
    stop_reason: str | None = None

    def populate_space(self, trial_id):
        if self.stop_patience:
            stop = patience_stop(self._ended_scores(), self.stop_patience,
                                 self.validation_examples, self.objective.name)  # fmt: skip
            if stop is not None:
                if self.stop_reason is None:
                    self.stop_reason = stop.reason(self.objective.name)
                    progress.say(self.stop_reason)
                    self.save()  # keras-tuner saves no state for a STOPPED answer
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        self.stop_reason = None  # a resumed search with other settings goes on
        return super().populate_space(trial_id)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), STOP_REASON: self.stop_reason}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.stop_reason = state.get(STOP_REASON)

    def _ended_scores(self) -> list[float]:
        done = kt.engine.trial.TrialStatus.COMPLETED
        trials = (self.trials[t] for t in self.end_order)
        return [t.score for t in trials if t.status == done and t.score is not None]


@functools.cache
def flat_oracle(oracle_class: type[kt.Oracle]) -> type[kt.Oracle]:
    """`oracle_class` with atomic state files, the constant-time failure check and the
    patience stop (same name, so keras-tuner's messages read as before)."""
    bases = (AtomicStateOracle, TrailingFailureCheck, PatienceOracle, oracle_class)
    return type(oracle_class.__name__, bases, {})


OracleFactory = Callable[[DictConfig, dict[str, Any]], kt.Oracle]
ORACLES: dict[str, OracleFactory] = {}  # tuner.kind -> factory(tuner config, common kwargs)


def register_oracle(kind: str) -> Callable[[OracleFactory], OracleFactory]:
    """One entry per `TunerKind` (the schema's enum is the list of names)."""

    def deco(factory: OracleFactory) -> OracleFactory:
        ORACLES[kind] = factory
        return factory

    return deco


@register_oracle(TunerKind.random)
def _random(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return flat_oracle(kt.oracles.RandomSearchOracle)(max_trials=tuner.max_trials, **common)


@register_oracle(TunerKind.grid)
def _grid(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return flat_oracle(kt.oracles.GridSearchOracle)(max_trials=tuner.max_trials, **common)


@register_oracle(TunerKind.bayesian)
def _bayesian(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return flat_oracle(kt.oracles.BayesianOptimizationOracle)(
        max_trials=tuner.max_trials,
        num_initial_points=tuner.num_initial_points,
        alpha=tuner.alpha,
        beta=tuner.beta,
        **common,
    )


@register_oracle(TunerKind.hyperband)
def _hyperband(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return flat_oracle(kt.oracles.HyperbandOracle)(
        max_epochs=tuner.max_epochs,
        factor=tuner.factor,
        hyperband_iterations=tuner.hyperband_iterations,
        **common,
    )


def make_oracle(
    tuner: DictConfig, patience: int | None = None, validation_examples: int = 0
) -> kt.Oracle:
    """The oracle of `tuner.kind`; `patience` (search.stop.patience) stops it once that
    many trials in a row did not beat the best by more than the validation set's noise."""
    objective = kt.Objective(str(tuner.objective), direction=direction(tuner.objective))
    common = dict(
        objective=objective,
        # keras-tuner replaces a falsy seed (0) with a random one: shift by one so that
        # every tuner.seed, 0 included, samples the same trials on every run.
        seed=tuner.seed + 1,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=tuner.max_consecutive_failed_trials,
    )
    oracle = ORACLES[str(tuner.kind)](tuner, common)
    oracle.stop_patience, oracle.validation_examples = patience, validation_examples
    return oracle
