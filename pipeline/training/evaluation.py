"""Classification metrics in NumPy (no TensorFlow): accuracy, loss, macro-F1, confusion;
and `evaluate`, which scores a model on one split with them."""

from __future__ import annotations

import numpy as np

from pipeline.config.schema import TrainConfig
from pipeline.models import scores


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present counts 0."""
    return float(scores.macro_f1(y_true, y_pred, n_classes))


def classification_metrics(probs: np.ndarray, y_true: np.ndarray, prefix: str) -> dict[str, float]:
    """accuracy, cross-entropy loss and macro-F1 under `prefix` (e.g. "val_")."""
    n_classes = probs.shape[1]
    y_pred = probs.argmax(axis=1)
    return {
        f"{prefix}accuracy": float((y_pred == y_true).mean()),
        f"{prefix}loss": float(scores.example_losses(probs, y_true).mean()),
        f"{prefix}macro_f1": macro_f1(y_true, y_pred, n_classes),
    }


def evaluate(
    model, data, split: str, train: TrainConfig, *, trim_padding: bool, prefix: str
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on one split and the class probabilities (in the split's order)."""
    from pipeline.training.batching import predict_proba
    from pipeline.training.fit import Diverged

    probs = predict_proba(
        model,
        data.x[split],
        train.batch_size * 4,
        train.bucketing.n_buckets,
        bool(train.bucketing.enabled and trim_padding),
    )
    if not np.all(np.isfinite(probs)):
        raise Diverged(f"model outputs non-finite probabilities on the {split} split")
    return classification_metrics(probs, data.y[split], prefix), probs
