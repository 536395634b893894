"""Fit and evaluate one model on prepared data: shared by the tuner, benchmarks and reproduce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from pipeline.batching import BucketedBatches, predict_proba
from pipeline.data import PreparedData, balanced_class_weights
from pipeline.evaluation import classification_metrics


class Diverged(RuntimeError):
    """Training produced a NaN/inf loss."""


def sample_weights(data: PreparedData, train: Mapping[str, Any]) -> np.ndarray | None:
    if train["class_weight"] != "balanced":
        return None
    weights = balanced_class_weights(data.y["train"], data.n_classes)
    return np.asarray([weights[int(c)] for c in data.y["train"]], dtype="float32")


def trims_padding(model: keras.Model | None, train: Mapping[str, Any]) -> bool:
    """Bucketing is for masked models only: `classic` sees the full padded width,
    as the recipe it reproduces does (trimming would change what it computes)."""
    if not train["bucketing"]["enabled"]:
        return False
    if model is None:
        return True
    return bool(getattr(model.get_layer("embedding"), "mask_zero", False))


def batches(
    data: PreparedData,
    split: str,
    train: Mapping[str, Any],
    shuffle: bool,
    seed: int = 0,
    weights: np.ndarray | None = None,
    model: keras.Model | None = None,
) -> BucketedBatches:
    bucketing = train["bucketing"]
    return BucketedBatches(
        data.x[split],
        data.y[split],
        batch_size=train["batch_size"],
        n_buckets=bucketing["n_buckets"],
        enabled=trims_padding(model, train),
        shuffle=shuffle,
        seed=seed,
        sample_weight=weights,
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
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train on the train split, validate on val; raise Diverged on a non-finite loss."""
    history = model.fit(
        batches(
            data,
            "train",
            train,
            shuffle=True,
            seed=train["seed"],
            weights=sample_weights(data, train),
            model=model,
        ).dataset(),
        validation_data=batches(data, "val", train, shuffle=False, model=model).dataset(),
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


def evaluate(
    model: keras.Model, data: PreparedData, split: str, train: Mapping[str, Any], prefix: str
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on one split and the class probabilities (in the split's order)."""
    probs = predict_proba(
        model,
        data.x[split],
        train["batch_size"] * 4,
        train["bucketing"]["n_buckets"],
        trims_padding(model, train),
    )
    if not np.all(np.isfinite(probs)):
        raise Diverged(f"model outputs non-finite probabilities on the {split} split")
    return classification_metrics(probs, data.y[split], prefix), probs


def best_epoch(history: keras.callbacks.History, monitor: str) -> int:
    """0-based index of the best epoch for `monitor` (min for losses, max otherwise)."""
    values = history.history.get(monitor)
    if not values:
        return len(history.epoch) - 1
    return int(np.argmin(values) if "loss" in monitor else np.argmax(values))
