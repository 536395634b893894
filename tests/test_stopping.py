"""`search.stop.patience` on a recorded curve: the 18 configurations of the committed
`pretrained_vectors` search (airline tweets), in the order the search tried them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.search.stopping import noise, patience_stop

RUNS = Path(__file__).parents[1] / "experiments/results/pretrained_vectors/runs.csv"
VALIDATION = 2165  # the airline validation split those runs were scored on


def recorded_curve() -> pd.Series:
    """Each configuration's mean val_accuracy over its seeds, in the order it started."""
    runs = pd.read_csv(RUNS)
    by = runs.groupby("group").agg(score=("val_accuracy", "mean"), start=("start_time", "min"))
    return by.sort_values("start")["score"].reset_index(drop=True)


def test_patience_stops_once_the_best_is_found_and_a_short_patience_costs_a_real_gain():
    curve = recorded_curve()
    assert len(curve) == 18
    stop = patience_stop(curve, 5, VALIDATION, "val_accuracy")
    assert stop is not None and stop.after < len(curve)  # trials saved
    assert stop.best == curve.max() and stop.best_trial == curve.idxmax() + 1
    assert stop.noise == pytest.approx(noise(curve.max(), VALIDATION))
    # every trial after the best is within the noise of it (why the rule stopped)
    assert (curve[stop.best_trial :] <= curve.max() + stop.noise).all()

    hasty = patience_stop(curve, 3, VALIDATION, "val_accuracy")
    assert hasty is not None and hasty.after < stop.best_trial
    assert curve.max() - hasty.best > hasty.noise  # it stopped short of a real gain
    assert "3 trials in a row did not beat the best val_accuracy" in hasty.reason("val_accuracy")


def test_a_gain_beyond_the_noise_resets_the_count_and_a_curve_that_climbs_never_stops():
    assert patience_stop([0.5, 0.6, 0.7, 0.8, 0.9], 1, 400, "val_accuracy") is None
    # 0.5 on 400 examples: noise 0.025; +0.02 is within it, +0.03 is not
    stop = patience_stop([0.5, 0.52, 0.55, 0.55, 0.551], 2, 400, "val_accuracy")
    assert stop is not None and stop.after == 5 and stop.best_trial == 5
