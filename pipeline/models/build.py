"""Build the classifier from model settings; read attention weights out of a trained model.

Embedding(mask_zero) -> [Dropout] -> LSTM/BiLSTM(return_sequences) -> pooling
-> [Dense] -> Dense(n_classes, softmax). The pooling layer and whether the embedding
masks padding come from the pooling registry (`classic` turns masking off, as the
original recipe does, so it is numerically the same model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from pipeline.models.metrics import MacroF1
from pipeline.models.registry import PoolingVariant, variant_of

POOLING_LAYER_NAME = "pooling"


def build_model(
    settings: Mapping[str, Any],
    vocab_size: int,
    n_classes: int,
    learning_rate: float,
    clipnorm: float | None = None,
) -> keras.Model:
    """A compiled model; `settings` holds the model.* knobs (after hyperparameters)."""
    import pipeline.models.layers  # noqa: F401  (registers the layers and MacroF1)

    variant = variant_of(settings)
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        vocab_size, settings["embedding_dim"], mask_zero=variant.mask_aware, name="embedding"
    )(tokens)
    if settings.get("dropout", 0.0) > 0:
        x = keras.layers.Dropout(settings["dropout"], name="embedding_dropout")(x)
    rnn = keras.layers.LSTM(settings["units"], return_sequences=True, name="lstm")
    if settings.get("bidirectional", False):
        rnn = keras.layers.Bidirectional(rnn, name="bilstm")
    states = rnn(x)
    features = variant.make_layer(settings, POOLING_LAYER_NAME)(states)
    if settings.get("dense_units", 0) > 0:
        features = keras.layers.Dense(settings["dense_units"], activation="relu", name="dense")(
            features
        )
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classifier")(features)
    model = keras.Model(tokens, outputs, name=f"lstm_{settings['pooling']}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=clipnorm),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", MacroF1(n_classes)],
    )
    return model


def _rewired(model: keras.Model, pooling_call) -> keras.Model:
    """The model's chain of layers (see build_model) called again on a fresh input, with
    `pooling_call(states, tokens)` in place of the pooling layer. Keras propagates the
    padding mask exactly as in the model; the other layers keep their trained weights."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x, extra = tokens, []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == POOLING_LAYER_NAME:
            x, *extra = pooling_call(x, tokens)
        else:
            x = layer(x)
    return keras.Model(tokens, [x, *extra])


def attention_and_probs(
    model: keras.Model,
    variant: PoolingVariant,
    token_ids: np.ndarray,
    batch_size: int = 256,
    per_head: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (n, classes), attention weights over every step (n, steps),
    or (n, heads, steps) with `per_head`) in one pass, padding steps included."""
    if not variant.attention_weights:
        raise ValueError(f"pooling '{variant.name}' has no attention weights")
    # A copy of the pooling layer (same config and weights) asked for its weights: the
    # layer itself can't be reused, a Keras layer's outputs keep one structure per call.
    pooling = model.get_layer(POOLING_LAYER_NAME)
    weighted = type(pooling).from_config(
        {**pooling.get_config(), "name": f"{POOLING_LAYER_NAME}_weights"}
    )

    def call(states, tokens):
        out = weighted(states, return_attention_scores=True, per_head=per_head)
        weighted.set_weights(pooling.get_weights())
        return out

    probs, full = _rewired(model, call).predict(token_ids, batch_size=batch_size, verbose=0)
    return np.asarray(probs), np.asarray(full)


def uniform_attention_probs(
    model: keras.Model, variant: PoolingVariant, token_ids: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities with the learned attention replaced by uniform weights over
    each example's real tokens (the same heads and merge; `classic` too, although it was
    trained without a mask): the "is attention needed?" ablation."""
    from pipeline.models.layers import UniformAttention

    if not variant.attention_weights:
        raise ValueError(f"pooling '{variant.name}' has no attention weights")
    pooling = model.get_layer(POOLING_LAYER_NAME)
    uniform = UniformAttention(
        heads=getattr(pooling, "heads", 1),
        merge=getattr(pooling, "merge", "concat"),
        name=f"{POOLING_LAYER_NAME}_uniform",
    )

    def call(states, tokens):
        return (uniform(states, mask=keras.ops.not_equal(tokens, 0)),)

    return np.asarray(_rewired(model, call).predict(token_ids, batch_size=batch_size, verbose=0))


def attention_matrix(
    model: keras.Model, variant: PoolingVariant, token_ids: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Attention weights over every step, padding included, shape (n, steps)."""
    return attention_and_probs(model, variant, token_ids, batch_size)[1]


def attention_weights(
    model: keras.Model, variant: PoolingVariant, token_ids: np.ndarray, batch_size: int = 256
) -> list[np.ndarray]:
    """Per-example weights over the real tokens only (padding id 0 dropped).

    For masked attention they sum to 1; for `classic` the shortfall from 1 is the
    mass the model put on padding.
    """
    full = attention_matrix(model, variant, token_ids, batch_size)
    return [row[ids != 0] for row, ids in zip(full, token_ids, strict=True)]
