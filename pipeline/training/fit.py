"""Fit one model on prepared data, and read its history: shared by the tuner, reproduce
and the benchmarks, so every path trains the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from pipeline.config import VALIDATION_METRICS, minimised
from pipeline.data import PreparedData, balanced_class_weights
from pipeline.training.batching import BucketedBatches


class Diverged(RuntimeError):
    """Training produced a NaN/inf loss."""


def enable_determinism(enabled: bool) -> None:
    """TensorFlow op determinism (process-wide): same seed, same data -> same metrics."""
    if enabled:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def sample_weights(data: PreparedData, train: Mapping[str, Any]) -> np.ndarray | None:
    if train["class_weight"] != "balanced":
        return None
    weights = balanced_class_weights(data.y["train"], data.n_classes)
    return np.asarray([weights[int(c)] for c in data.y["train"]], dtype="float32")


def batches(
    data: PreparedData,
    split: str,
    train: Mapping[str, Any],
    *,
    trim_padding: bool,
    shuffle: bool,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> BucketedBatches:
    """Batches of one split; `trim_padding` (the pooling variant's say, see
    `PoolingVariant.trims_padding`) and `train.bucketing.enabled` both must agree."""
    bucketing = train["bucketing"]
    return BucketedBatches(
        data.x[split],
        data.y[split],
        batch_size=train["batch_size"],
        n_buckets=bucketing["n_buckets"],
        enabled=bool(bucketing["enabled"] and trim_padding),
        shuffle=shuffle,
        seed=seed,
        sample_weight=weights,
        exact=bool(bucketing.get("exact", False)),
    )


def standard_callbacks(train: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    es = train["early_stopping"]
    if es["enabled"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es["monitor"],
                patience=es["patience"],
                restore_best_weights=es["restore_best_weights"],
            )
        )
    return callbacks


def fit(
    model: keras.Model,
    data: PreparedData,
    train: Mapping[str, Any],
    *,
    trim_padding: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train on the train split, validate on val; raise Diverged on a non-finite loss."""
    training = batches(
        data,
        "train",
        train,
        trim_padding=trim_padding,
        shuffle=True,
        seed=train["seed"],
        weights=sample_weights(data, train),
    )
    validation = batches(data, "val", train, trim_padding=trim_padding, shuffle=False)
    history = model.fit(
        training.dataset(),
        validation_data=validation.dataset(),
        epochs=epochs or train["epochs"],
        callbacks=[*standard_callbacks(train), *callbacks],
        verbose=verbose,
    )
    losses = history.history.get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        epoch = next((i + 1 for i, v in enumerate(losses) if not np.isfinite(v)), len(losses))
        raise Diverged(
            f"training diverged: loss is {losses[-1] if losses else 'missing'} at epoch {epoch}"
        )
    return history


def best_epoch(history: keras.callbacks.History, monitor: str) -> int:
    """0-based index of the best epoch for `monitor`."""
    values = history.history.get(monitor)
    if not values:
        return len(history.epoch) - 1
    return int(np.argmin(values) if minimised(monitor) else np.argmax(values))


def final_epoch(history: keras.callbacks.History, train: Mapping[str, Any]) -> int:
    """The epoch whose weights the model ends with (Keras restores the best one at the
    end of training when early stopping has restore_best_weights)."""
    es = train["early_stopping"]
    if es["enabled"] and es["restore_best_weights"]:
        return best_epoch(history, es["monitor"])
    return len(history.epoch) - 1


def validation_metrics(history: keras.callbacks.History, epoch: int) -> dict[str, float]:
    """val_accuracy/val_loss/val_macro_f1 of one epoch; Diverged when not finite."""
    metrics = {k: float(history.history[k][epoch]) for k in VALIDATION_METRICS}
    if not all(np.isfinite(v) for v in metrics.values()):
        raise Diverged(f"validation metrics are not finite at epoch {epoch + 1}: {metrics}")
    return metrics
