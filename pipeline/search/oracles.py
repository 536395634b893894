"""keras-tuner oracles from `tuner.*`: which configuration each trial gets."""

from __future__ import annotations

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline.config import TunerKind, direction


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
    if tuner.kind == TunerKind.random:
        return kt.oracles.RandomSearchOracle(max_trials=tuner.max_trials, **common)
    if tuner.kind == TunerKind.grid:
        return kt.oracles.GridSearchOracle(max_trials=tuner.max_trials, **common)
    if tuner.kind == TunerKind.bayesian:
        return kt.oracles.BayesianOptimizationOracle(
            max_trials=tuner.max_trials,
            num_initial_points=tuner.num_initial_points,
            alpha=tuner.alpha,
            beta=tuner.beta,
            **common,
        )
    return kt.oracles.HyperbandOracle(
        max_epochs=tuner.max_epochs,
        factor=tuner.factor,
        hyperband_iterations=tuner.hyperband_iterations,
        **common,
    )
