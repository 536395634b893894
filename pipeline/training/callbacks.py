"""Keras callbacks every trial uses: a console line per epoch, the validation confusion."""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from pipeline import progress
from pipeline.models.metrics import find_macro_f1


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


class ValidationConfusion(keras.callbacks.Callback):
    """Keeps each epoch's validation confusion matrix (rows true, columns predicted).

    At `on_epoch_end` the compiled metrics hold the validation pass that `fit` just ran.
    """

    def __init__(self):
        super().__init__()
        self.by_epoch: dict[int, np.ndarray] = {}

    def on_epoch_end(self, epoch, logs=None):
        metric = next(find_macro_f1(self.model.metrics), None)
        if metric is not None:
            self.by_epoch[epoch] = ops.convert_to_numpy(metric.matrix).round().astype(np.int64)
