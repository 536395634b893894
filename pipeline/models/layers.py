"""Pooling layers over LSTM states: masked attention, mean, max, last step, and `classic`.

Every layer is a plain Keras 3 layer (`keras.ops` only, `get_config`, registered for
`safe_mode=True` loading, no Lambda) that consumes the time axis and its mask. The
attention layers follow Keras' own convention (`keras.layers.Attention`,
`MultiHeadAttention`): `call(..., return_attention_scores=False)` returns the pooled
vector, and `(pooled, weights over time)` when asked. Masked layers give padded steps
exactly zero weight; `classic` reproduces the well-known recipe (unmasked softmax over
all steps, tanh score) as a baseline. Which layer a variant uses is decided in
`pipeline.models.registry`, nowhere else.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "attention_search"


def masked_softmax(scores, mask=None):
    """Softmax over time that gives masked steps exactly 0 (and survives all-masked rows)."""
    if mask is None:
        return ops.softmax(scores, axis=-1)
    m = ops.cast(mask, scores.dtype)
    shifted = scores - ops.max(
        ops.where(mask, scores, ops.full_like(scores, -1e9)), axis=-1, keepdims=True
    )
    exp = ops.exp(ops.minimum(shifted, 0.0)) * m
    return exp / ops.maximum(ops.sum(exp, axis=-1, keepdims=True), 1e-12)


class _Pooling1D(keras.layers.Layer):
    """Shared plumbing: accepts a mask, consumes it (the output has no time axis)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


class _AttentionPooling1D(_Pooling1D):
    """Pooling by a weighted sum over time; the weights are returned on request."""

    def attention(self, inputs, mask=None):
        """Weights over time, shape (batch, steps)."""
        raise NotImplementedError

    def call(self, inputs, mask=None, return_attention_scores=False):
        weights = self.attention(inputs, mask)
        context = ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)
        return (context, weights) if return_attention_scores else context

    def compute_output_spec(self, inputs, mask=None, return_attention_scores=False):
        # Keras' own attention layers do the same: the flag changes the output structure.
        batch, steps, dim = inputs.shape
        pooled = keras.KerasTensor((batch, dim), dtype=self.compute_dtype)
        if return_attention_scores:
            return pooled, keras.KerasTensor((batch, steps), dtype=self.compute_dtype)
        return pooled


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPooling(_AttentionPooling1D):
    """Additive attention over time: score_t = v . act(W h_t + b) (or act(w . h_t + b)).

    `activation` is "tanh" or "none"; `hidden_units=0` scores each state directly.
    Weights are 0 on padded steps and sum to 1.
    """

    def __init__(self, activation: str = "tanh", hidden_units: int = 0, **kwargs):
        super().__init__(**kwargs)
        if activation not in ("tanh", "none"):
            raise ValueError(f"activation must be 'tanh' or 'none', got {activation!r}")
        self.activation = activation
        self.hidden_units = int(hidden_units)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        width = self.hidden_units or 1
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, width), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(width,), initializer="zeros")
        if self.hidden_units:
            self.score_vector = self.add_weight(
                name="score_vector", shape=(width, 1), initializer="glorot_uniform"
            )

    def scores(self, inputs):
        z = ops.matmul(inputs, self.kernel) + self.bias
        if self.activation == "tanh":
            z = ops.tanh(z)
        if self.hidden_units:
            z = ops.matmul(z, self.score_vector)
        return ops.squeeze(z, axis=-1)

    def attention(self, inputs, mask=None):
        return masked_softmax(self.scores(inputs), mask)

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation,
            "hidden_units": self.hidden_units,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassicAttention(_AttentionPooling1D):
    """The recipe Dense(1, tanh) -> softmax over *all* steps -> weighted sum, in one layer.

    It ignores any mask on purpose: that is the baseline's documented behaviour
    (weight on padding).
    """

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, 1), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")

    def attention(self, inputs, mask=None):
        scores = ops.squeeze(ops.tanh(ops.matmul(inputs, self.kernel) + self.bias), axis=-1)
        return ops.softmax(scores, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(keras.layers.GlobalAveragePooling1D):
    """Keras' masked mean over time, plus what it does not do: an all-padding row gives
    zeros instead of 0/0 = NaN."""

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        m = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return ops.sum(inputs * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMaxPooling(_Pooling1D):
    """Max over real time steps only (Keras' GlobalMaxPooling1D ignores the mask)."""

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        m = ops.expand_dims(ops.cast(mask, "bool"), -1)
        masked = ops.where(m, inputs, ops.full_like(inputs, -1e9))
        any_real = ops.any(m, axis=1)
        return ops.where(any_real, ops.max(masked, axis=1), ops.zeros_like(inputs[:, 0]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class LastStepPooling(_Pooling1D):
    """The state at the last real step (not the last padded one)."""

    def call(self, inputs, mask=None):
        steps = ops.shape(inputs)[1]
        if mask is None:
            return inputs[:, -1]
        positions = ops.cast(mask, "int32") * ops.expand_dims(ops.arange(1, steps + 1), 0)
        last = ops.maximum(ops.max(positions, axis=1) - 1, 0)
        pick = ops.expand_dims(ops.one_hot(last, steps, dtype=inputs.dtype), -1)
        return ops.sum(inputs * pick, axis=1)


# Saved models compile with MacroF1: importing the layers registers it too, so
# `import pipeline.models.layers` is all a loader needs.
from pipeline.models import metrics as _metrics  # noqa: E402, F401
