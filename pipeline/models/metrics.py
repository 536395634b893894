"""Macro-F1 as a Keras metric, so validation needs no extra prediction pass.

`fit` already scores the validation split each epoch; this metric accumulates that
pass's confusion matrix too, so macro-F1 (`val_macro_f1`) and the confusion figure
come from it instead of a second `predict` over the split. Counts are unweighted
(class weights change the loss, not what counts as right). `keras.ops` only.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "attention_search"  # the same registration package as the pooling layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class MacroF1(keras.metrics.Metric):
    """Unweighted mean of per-class F1 over the batches seen since the last reset.

    A class neither present nor predicted counts 0, as in `training.evaluation.macro_f1`.
    """

    def __init__(self, n_classes: int, name: str = "macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.matrix = self.add_variable(
            shape=(self.n_classes, self.n_classes), initializer="zeros", name="matrix"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.n_classes)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.n_classes)
        self.matrix.assign_add(ops.matmul(ops.transpose(true), pred))

    def result(self):
        tp = ops.diagonal(self.matrix)
        denom = ops.sum(self.matrix, axis=0) + ops.sum(self.matrix, axis=1)
        f1 = ops.where(denom > 0, 2.0 * tp / ops.maximum(denom, 1.0), 0.0)
        return ops.mean(f1)

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.n_classes, self.n_classes)))

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


def find_macro_f1(metrics):
    """The MacroF1 among a model's (possibly nested) compiled metrics."""
    for metric in metrics:
        if isinstance(metric, MacroF1):
            yield metric
        yield from find_macro_f1(getattr(metric, "metrics", []) or [])
