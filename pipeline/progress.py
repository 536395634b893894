"""Console lines a user can follow during a search (no logging framework, no colours)."""

from __future__ import annotations

import sys
import time
from typing import Any

import keras


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def say(message: str = "") -> None:
    print(message, file=sys.stdout, flush=True)


def format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in values.items())


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
        say(
            f"{self.indent}epoch {epoch + 1}/{self.epochs}  {'  '.join(parts)}  "
            f"({time.perf_counter() - self.started:.1f}s)"
        )
