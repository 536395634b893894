"""Fit one model on prepared data, and read its history: shared by the tuner, reproduce
and the benchmarks, so every path trains the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np

from pipeline.config import VALIDATION_METRICS, minimised
from pipeline.config.schema import TrainConfig
from pipeline.data import PreparedData, balanced_class_weights
from pipeline.training.batching import BucketedBatches
from pipeline.training.compiled import XLA_SHAPES, set_jit
from pipeline.training.sharded import shards_for, shards_in_use
from pipeline.training.xla import choose_xla, shape_keys


class Diverged(RuntimeError):
    """Training produced a NaN/inf loss."""


def enable_determinism(enabled: bool) -> None:
    """TensorFlow op determinism (process-wide): same seed, same data -> same metrics.
    Off when the config says so, also in a process that had it on (tests, notebooks):
    XLA needs it off."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


def op_determinism_on() -> bool:
    """What Keras checks before it honours jit_compile (it drops XLA silently when on)."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def sample_weights(data: PreparedData, train: TrainConfig) -> np.ndarray | None:
    if train.class_weight != "balanced":
        return None
    weights = balanced_class_weights(data.y["train"], data.n_classes)
    return np.asarray([weights[int(c)] for c in data.y["train"]], dtype="float32")


def batches(
    data: PreparedData,
    split: str,
    train: TrainConfig,
    *,
    trim_padding: bool,
    shuffle: bool,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> BucketedBatches:
    """Batches of one split; `trim_padding` (the pooling variant's say, see
    `PoolingVariant.trims_padding`) and `train.bucketing.enabled` both must agree."""
    bucketing = train.bucketing
    return BucketedBatches(
        data.x[split],
        data.y[split],
        batch_size=train.batch_size,
        n_buckets=bucketing.n_buckets,
        enabled=bool(bucketing.enabled and trim_padding),
        shuffle=shuffle,
        seed=seed,
        sample_weight=weights,
        exact=bool(bucketing.exact),
    )


def standard_callbacks(train: TrainConfig) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    es = train.early_stopping
    if es.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                restore_best_weights=es.restore_best_weights,
            )
        )
    return callbacks


def build_training_state(model: keras.Model, training: BucketedBatches) -> None:
    """Create the optimizer's slots and the compiled metrics' variables before Keras traces
    its train step. Keras' TensorFlow trainer, with no distribution strategy, creates them
    inside the first trace, and a `tf.function` whose first trace creates variables is
    traced a second time (TensorFlow lifts them out, then traces again without): the LSTM's
    forward pass and gradient twice, 1.5-2 s of every trial here. Keras' own symbolic
    build (what it runs first under a strategy, and on the JAX backend) on two training
    rows (it skips what is built); the variables start as they would have (zeros), so
    training is bit-identical."""
    rows = slice(0, min(2, len(training.x)))
    batch = [training.x[rows]]
    if training.y is not None:
        batch.append(training.y[rows])
        if training.sample_weight is not None:
            batch.append(training.sample_weight[rows])
    model._symbolic_build(data_batch=tuple(batch))


def fit(
    model: keras.Model,
    data: PreparedData,
    train: TrainConfig,
    *,
    trim_padding: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    verbose: int = 0,
    announce: Callable[[str], None] | None = None,
) -> keras.callbacks.History:
    """Train on the train split, validate on val; raise Diverged on a non-finite loss.
    XLA as `train.jit_compile` says (`announce` gets the line saying what it chose; the
    choice is `history.xla`)."""
    training = batches(
        data,
        "train",
        train,
        trim_padding=trim_padding,
        shuffle=True,
        seed=train.seed,
        weights=sample_weights(data, train),
    )
    validation = batches(data, "val", train, trim_padding=trim_padding, shuffle=False)
    epochs = epochs or train.epochs
    # What XLA would compile: each bucket's last partial batch pooled into one, so at most
    # n_buckets + 1 shapes per split (without XLA the batches stay as they always were).
    xla_training, xla_validation = (
        training.with_pooled_remainders(),
        validation.with_pooled_remainders(),
    )
    choice = choose_xla(
        train.jit_compile,
        xla_training,
        xla_validation,
        epochs,
        train.xla,
        deterministic=bool(train.deterministic) or op_determinism_on(),
        compiled=XLA_SHAPES.get(model, frozenset()),  # a kept model's XLA programs
    )
    if choice.on:
        training, validation = xla_training, xla_validation
    shards = shards_for(train.xla.shards)
    set_jit(model, choice.on, shards)  # before the first fit: Keras compiles its step with it
    choice = dataclasses.replace(choice, shards=shards_in_use(model))
    if choice.on:
        compiled = XLA_SHAPES.get(model, frozenset())
        XLA_SHAPES[model] = compiled | shape_keys(training, validation)
    build_training_state(model, training)
    if announce is not None and (choice.on or choice.blocked):
        announce(choice.line())
    history = model.fit(
        training.dataset(),
        validation_data=validation.dataset(),
        epochs=epochs,
        callbacks=[*standard_callbacks(train), *callbacks],
        verbose=verbose,
    )
    history.xla = choice
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


def final_epoch(history: keras.callbacks.History, train: TrainConfig) -> int:
    """The epoch whose weights the model ends with (Keras restores the best one at the
    end of training when early stopping has restore_best_weights)."""
    es = train.early_stopping
    if es.enabled and es.restore_best_weights:
        return best_epoch(history, es.monitor)
    return len(history.epoch) - 1


def validation_metrics(history: keras.callbacks.History, epoch: int) -> dict[str, float]:
    """val_accuracy/val_loss/val_macro_f1 of one epoch; Diverged when not finite."""
    metrics = {k: float(history.history[k][epoch]) for k in VALIDATION_METRICS}
    if not all(np.isfinite(v) for v in metrics.values()):
        raise Diverged(f"validation metrics are not finite at epoch {epoch + 1}: {metrics}")
    return metrics
