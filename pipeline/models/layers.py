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


NORMALIZERS = ("softmax", "sparsemax")
HEAD_MERGES = ("concat", "mean")


def sparsemax(scores, mask=None):
    """Sparsemax over the last axis (Martins & Astudillo 2016): the Euclidean projection
    of the scores onto the probability simplex, so low scores get exactly 0.

    Masked steps get exactly 0: they are set just below the smallest real score minus 1,
    which is always under the threshold (tau >= max - 1), so they never enter the support.
    `mask` broadcasts against `scores` (batch, ..., steps).
    """
    dtype = scores.dtype
    if mask is not None:
        m = ops.cast(mask, "bool")
        big = ops.full_like(scores, 1e9)
        floor = ops.min(ops.where(m, scores, big), axis=-1, keepdims=True) - 1.0
        scores = ops.where(m, scores, floor)
    z = ops.flip(ops.sort(scores, axis=-1), axis=-1)  # descending
    k = ops.cast(ops.arange(1, ops.shape(scores)[-1] + 1), dtype)
    cumulative = ops.cumsum(z, axis=-1)
    support = ops.cast(1.0 + k * z > cumulative, dtype)  # a prefix of the sorted scores
    size = ops.maximum(ops.sum(support, axis=-1, keepdims=True), 1.0)
    tau = (ops.sum(z * support, axis=-1, keepdims=True) - 1.0) / size
    weights = ops.maximum(scores - tau, 0.0)
    if mask is not None:
        weights = weights * ops.cast(m, dtype)
    return weights


def normalize(scores, mask, normalizer: str):
    """Weights over the last axis: `softmax` (dense) or `sparsemax` (exact zeros)."""
    return sparsemax(scores, mask) if normalizer == "sparsemax" else masked_softmax(scores, mask)


class _AttentionPooling1D(_Pooling1D):
    """Pooling by weighted sums over time, one per head; the weights are returned on request.

    `attention` gives weights of shape (batch, heads, steps). Heads are concatenated
    (output width heads x features) or averaged. `return_attention_scores=True` returns
    the weights averaged over heads, (batch, steps); with `per_head=True` as well, every
    head's, (batch, heads, steps).
    """

    def __init__(self, heads: int = 1, merge: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if int(heads) < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if merge not in HEAD_MERGES:
            raise ValueError(f"merge must be one of {HEAD_MERGES}, got {merge!r}")
        self.heads = int(heads)
        self.merge = merge

    def attention(self, inputs, mask=None):
        """Weights over time, shape (batch, heads, steps)."""
        raise NotImplementedError

    def call(self, inputs, mask=None, return_attention_scores=False, per_head=False):
        weights = self.attention(inputs, mask)
        if self.heads == 1:  # the single-head computation, exactly as before heads existed
            context = ops.sum(inputs * ops.expand_dims(weights[:, 0], -1), axis=1)
        else:
            per_head_context = ops.einsum("bht,btd->bhd", weights, inputs)
            if self.merge == "concat":
                context = ops.reshape(per_head_context, (-1, self.heads * inputs.shape[-1]))
            else:
                context = ops.mean(per_head_context, axis=1)
        if not return_attention_scores:
            return context
        return context, (weights if per_head else ops.mean(weights, axis=1))

    def _width(self, dim):
        return dim * self.heads if self.merge == "concat" else dim

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._width(input_shape[-1]))

    def compute_output_spec(self, inputs, mask=None, return_attention_scores=False, per_head=False):
        # Keras' own attention layers do the same: the flag changes the output structure.
        batch, steps, dim = inputs.shape
        pooled = keras.KerasTensor((batch, self._width(dim)), dtype=self.compute_dtype)
        if return_attention_scores:
            shape = (batch, self.heads, steps) if per_head else (batch, steps)
            return pooled, keras.KerasTensor(shape, dtype=self.compute_dtype)
        return pooled

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "merge": self.merge}


class _ScoredAttention(_AttentionPooling1D):
    """Masked attention from per-head scores: normaliser (softmax | sparsemax) and a
    temperature that divides the scores (lower: sharper)."""

    def __init__(self, normalizer: str = "softmax", temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.normalizer = normalizer
        self.temperature = float(temperature)

    def scores(self, inputs):
        """Scores of shape (batch, steps, heads)."""
        raise NotImplementedError

    def attention(self, inputs, mask=None):
        scores = ops.transpose(self.scores(inputs), (0, 2, 1))  # (batch, heads, steps)
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if mask is not None:
            mask = ops.expand_dims(mask, 1)
        return normalize(scores, mask, self.normalizer)

    def get_config(self):
        return {
            **super().get_config(),
            "normalizer": self.normalizer,
            "temperature": self.temperature,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPooling(_ScoredAttention):
    """Additive attention over time: score_t = v . act(W h_t + b) (or act(w . h_t + b)).

    `activation` is "tanh" or "none"; `hidden_units=0` scores each state directly. With
    several heads each has its own score vector (Lin et al. 2017's structured
    self-attention). Weights are 0 on padded steps and sum to 1 per head.
    """

    def __init__(self, activation: str = "tanh", hidden_units: int = 0, **kwargs):
        super().__init__(**kwargs)
        if activation not in ("tanh", "none"):
            raise ValueError(f"activation must be 'tanh' or 'none', got {activation!r}")
        self.activation = activation
        self.hidden_units = int(hidden_units)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        width = self.hidden_units or self.heads
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, width), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(width,), initializer="zeros")
        if self.hidden_units:
            self.score_vector = self.add_weight(
                name="score_vector", shape=(width, self.heads), initializer="glorot_uniform"
            )

    def scores(self, inputs):
        z = ops.matmul(inputs, self.kernel) + self.bias
        if self.activation == "tanh":
            z = ops.tanh(z)
        if self.hidden_units:
            z = ops.matmul(z, self.score_vector)
        return z

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation,
            "hidden_units": self.hidden_units,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class DotProductAttentionPooling(_ScoredAttention):
    """Scaled dot-product attention with a learned query per head (Vaswani et al. 2017,
    with the query a parameter instead of a token): score_t = q . (W_k h_t) / sqrt(d_k).

    `key_units=0` uses the states as keys (d_k = their width, no projection).
    """

    def __init__(self, key_units: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.key_units = int(key_units)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.key_width = self.key_units or dim
        if self.key_units:
            self.key_kernel = self.add_weight(
                name="key_kernel",
                shape=(dim, self.heads, self.key_units),
                initializer="glorot_uniform",
            )
        self.query = self.add_weight(
            name="query", shape=(self.heads, self.key_width), initializer="glorot_uniform"
        )

    def scores(self, inputs):
        if self.key_units:
            keys = ops.einsum("btd,dhk->bthk", inputs, self.key_kernel)
            scores = ops.einsum("bthk,hk->bth", keys, self.query)
        else:
            scores = ops.einsum("btd,hd->bth", inputs, self.query)
        return scores / float(self.key_width) ** 0.5

    def get_config(self):
        return {**super().get_config(), "key_units": self.key_units}


class UniformAttention(_AttentionPooling1D):
    """Every head's weights uniform over the real steps (all steps without a mask): the
    "is attention needed?" ablation (Wiegreffe & Pinter 2019) swaps it in at inference."""

    def attention(self, inputs, mask=None):
        if mask is None:
            real = ops.ones_like(inputs[:, :, 0])
        else:
            real = ops.cast(mask, inputs.dtype)
        weights = real / ops.maximum(ops.sum(real, axis=1, keepdims=True), 1.0)
        return ops.repeat(ops.expand_dims(weights, 1), self.heads, axis=1)


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
        return ops.expand_dims(ops.softmax(scores, axis=-1), 1)


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


# Saved models compile with MacroF1 and hold a FusedLSTM and a PhiloxDropout: importing the
# layers registers them too, so `import pipeline.models.layers` is all a loader needs.
from pipeline.models import dropout as _dropout  # noqa: E402, F401
from pipeline.models import fused_lstm as _fused_lstm  # noqa: E402, F401
from pipeline.models import metrics as _metrics  # noqa: E402, F401
