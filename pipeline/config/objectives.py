"""Which way is better: the one place that says whether a metric is minimised.

The tuner's objective, early stopping's best epoch, the summary table, the report's
leaderboard and its comparisons all ask `minimised(metric)`; nothing else decides it.
"""

from __future__ import annotations

from enum import StrEnum


class Objective(StrEnum):
    """Metrics the tuner can rank trials by (`tuner.objective`)."""

    val_accuracy = "val_accuracy"
    val_loss = "val_loss"
    val_macro_f1 = "val_macro_f1"


# What a trial is scored by: fit's own validation pass, one value per objective.
VALIDATION_METRICS = tuple(o.value for o in Objective)


def minimised(metric: str) -> bool:
    """Lower is better for losses (`loss`, `val_loss`, `test_loss`), higher for the rest."""
    return str(metric).endswith("loss")


def direction(metric: str) -> str:
    """'min' or 'max', as keras-tuner's `Objective` and pandas sorting want it."""
    return "min" if minimised(metric) else "max"


def is_better(score: float, than: float | None, metric: str) -> bool:
    """Whether `score` beats `than` (None: nothing to beat yet)."""
    if than is None:
        return True
    return score < than if minimised(metric) else score > than
