"""keras-tuner oracles from `tuner.*`: which configuration each trial gets (their state
files written atomically, `state_files`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline.config import TunerKind, direction
from pipeline.search.state_files import atomic_state

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
    return atomic_state(kt.oracles.RandomSearchOracle)(max_trials=tuner.max_trials, **common)


@register_oracle(TunerKind.grid)
def _grid(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return atomic_state(kt.oracles.GridSearchOracle)(max_trials=tuner.max_trials, **common)


@register_oracle(TunerKind.bayesian)
def _bayesian(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return atomic_state(kt.oracles.BayesianOptimizationOracle)(
        max_trials=tuner.max_trials,
        num_initial_points=tuner.num_initial_points,
        alpha=tuner.alpha,
        beta=tuner.beta,
        **common,
    )


@register_oracle(TunerKind.hyperband)
def _hyperband(tuner: DictConfig, common: dict[str, Any]) -> kt.Oracle:
    return atomic_state(kt.oracles.HyperbandOracle)(
        max_epochs=tuner.max_epochs,
        factor=tuner.factor,
        hyperband_iterations=tuner.hyperband_iterations,
        **common,
    )


def make_oracle(tuner: DictConfig) -> kt.Oracle:
    objective = kt.Objective(str(tuner.objective), direction=direction(tuner.objective))
    common = dict(
        objective=objective,
        # keras-tuner replaces a falsy seed (0) with a random one: shift by one so that
        # every tuner.seed, 0 included, samples the same trials on every run.
        seed=tuner.seed + 1,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=tuner.max_consecutive_failed_trials,
    )
    return ORACLES[str(tuner.kind)](tuner, common)
