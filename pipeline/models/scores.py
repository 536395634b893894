"""Classification scores in numpy, the one definition every numpy caller uses: the
trial's final metrics (`training.evaluation`), the reference models and the report's
bootstrap (`analysis.comparisons`, over any leading resample axes). The Keras streaming
`metrics.MacroF1` computes the same macro-F1 during fit (tested equal). No Keras here."""

from __future__ import annotations

import numpy as np

LOSS_FLOOR = 1e-7  # probabilities are clipped here before the log (as Keras' own loss)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Unweighted mean of per-class F1 over the last axis (any leading batch shape); a
    class neither present nor predicted counts 0."""
    f1 = []
    for k in range(n_classes):
        tp = np.sum((y == k) & (pred == k), axis=-1)
        denom = np.sum(pred == k, axis=-1) + np.sum(y == k, axis=-1)
        f1.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(f1, axis=0)


def example_losses(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's cross-entropy -log p(true class), clipped at LOSS_FLOOR; `probs`
    (..., classes), `y` (...)."""
    picked = np.take_along_axis(probs, y[..., None], axis=-1)[..., 0]
    return -np.log(np.clip(picked, LOSS_FLOOR, 1.0))
