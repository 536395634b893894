"""Train one configuration with one seed and log it on the active run.

Shared by the tuner (`TrackedTuner.run_trial`) and `pipeline.reproduce`, so a
reproduction trains through exactly the code path the original run took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from pipeline import progress
from pipeline.attention_report import AttentionEpochLogger, AttentionReporter
from pipeline.ledger import METRIC_KEYS
from pipeline.metrics import ValidationConfusion
from pipeline.plots import confusion_matrix_figure
from pipeline.tracking import Tracker
from pipeline.training import Diverged, best_epoch, fit


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch train/val metrics on the active run, with step=epoch."""

    def __init__(self, tracker: Tracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        finite = {k: v for k, v in (logs or {}).items() if np.isfinite(v)}
        self.tracker.log_metrics(finite, step=epoch)


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch: train/val loss and accuracy, and the epoch's wall time."""

    def __init__(self, epochs: int, indent: str = "    "):
        super().__init__()
        self.epochs = epochs
        self.indent = indent
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [
            f"{k} {logs[k]:.4f}"
            for k in ("loss", "accuracy", "val_loss", "val_accuracy")
            if k in logs
        ]
        progress.say(
            f"{self.indent}epoch {epoch + 1}/{self.epochs}  {'  '.join(parts)}  "
            f"({time.perf_counter() - self.started:.1f}s)"
        )


def make_deterministic(enabled: bool) -> None:
    """TensorFlow op determinism (process-wide): same seed, same data -> same metrics."""
    if enabled:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def log_datasets(data, tracker: Tracker) -> None:
    """The train/val splits as MLflow datasets, so the UI shows what a run used."""
    for split, context in (("train", "training"), ("val", "validation")):
        tracker.log_dataset(
            data.x[split],
            data.y[split],
            f"{data.name}-{split}",
            context,
            source=data.name,
            digest=f"{data.fingerprint[:28]}-{split}",
        )


def final_epoch(history: keras.callbacks.History, train: dict[str, Any]) -> int:
    """The epoch whose weights the model ends with (Keras restores the best one at the
    end of training when early stopping has restore_best_weights)."""
    es = train["early_stopping"]
    if es["enabled"] and es["restore_best_weights"]:
        return best_epoch(history, es["monitor"])
    return len(history.epoch) - 1


def validation_metrics(history: keras.callbacks.History, epoch: int) -> dict[str, float]:
    """val_accuracy/val_loss/val_macro_f1 of one epoch; Diverged when not finite."""
    metrics = {k: float(history.history[k][epoch]) for k in METRIC_KEYS}
    if not all(np.isfinite(v) for v in metrics.values()):
        raise Diverged(f"validation metrics are not finite at epoch {epoch + 1}: {metrics}")
    return metrics


@dataclass
class TrainedTrial:
    metrics: dict[str, float]
    model: keras.Model
    fit_seconds: float  # mean over executions: the part a bare model.fit would cost too


def train_and_log(
    cfg: DictConfig,
    data,
    tracker: Tracker,
    reporter: AttentionReporter,
    build: Callable[[], keras.Model],
    train: dict[str, Any],
    label: str,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainedTrial:
    """Fit `tuner.executions_per_trial` models (seeds train.seed, +1, ...), log the first's
    curves and the mean final metrics, a confusion matrix and the attention artifacts."""
    if cfg.tracking.log_datasets:
        log_datasets(data, tracker)
    seed = int(train["seed"])
    runs: list[dict[str, float]] = []
    fit_seconds = 0.0
    for execution in range(cfg.tuner.executions_per_trial):
        keras.backend.clear_session()  # also runs gc.collect()
        keras.utils.set_random_seed(seed + execution)
        model = build()
        confusion = ValidationConfusion()
        callbacks = [EpochPrinter(train["epochs"]), confusion, *extra_callbacks]
        if execution == 0:
            callbacks.append(MlflowEpochLogger(tracker))
            if cfg.attention.enabled and cfg.attention.plot_every:
                callbacks.append(AttentionEpochLogger(reporter, label, cfg.attention.plot_every))
        started = time.perf_counter()
        history = fit(model, data, train, callbacks=callbacks)
        fit_seconds += time.perf_counter() - started
        # fit's own validation pass already scored the weights the model ends with.
        kept = final_epoch(history, train)
        runs.append(validation_metrics(history, kept))
    final = {k: float(np.mean([r[k] for r in runs])) for k in METRIC_KEYS}
    best = best_epoch(history, train["early_stopping"]["monitor"])
    # The final model (best weights restored) is scored one step after the last epoch,
    # so the last point of each val_* curve is the score the tuner ranks by.
    tracker.log_metrics(final, step=len(history.epoch))
    tracker.log_metrics(
        {
            "best_epoch": best,
            "epochs_trained": len(history.epoch),
            **{f"best_{k}": v[best] for k, v in history.history.items() if k.startswith("val_")},
            "param_count": model.count_params(),
            "train_seconds": fit_seconds / len(runs),
        }
    )
    tracker.log_figure(
        confusion_matrix_figure(confusion.by_epoch[kept], data.class_names, "validation"),
        "confusion_matrix.png",
    )
    if cfg.attention.enabled:
        attention_metrics = reporter.log(model, label, step=len(history.epoch))
        tracker.log_metrics(attention_metrics, step=len(history.epoch))
        final.update(attention_metrics)
    if cfg.tracking.log_model:
        tracker.log_keras_model(model, data.x["val"][:2])
    return TrainedTrial(final, model, fit_seconds / len(runs))
