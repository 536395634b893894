"""Build the classifier from model settings; read attention weights out of a trained model.

Embedding(mask_zero) -> [Dropout] -> LSTM/BiLSTM(return_sequences) -> pooling
-> [Dense] -> Dense(n_classes, softmax). `classic` turns masking off, as the
original recipe does, so it is numerically the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from pipeline.layers import (
    ATTENTION_LAYERS,
    AttentionPooling,
    ClassicAttention,
    LastStepPooling,
    MaskedMaxPooling,
    MaskedMeanPooling,
)
from pipeline.metrics import MacroF1

POOLING_LAYER_NAME = "pooling"


def make_pooling(settings: Mapping[str, Any]) -> keras.layers.Layer:
    pooling = settings["pooling"]
    if pooling == "attention":
        return AttentionPooling(
            activation=settings["attention_activation"],
            hidden_units=settings.get("attention_hidden", 0),
            name=POOLING_LAYER_NAME,
        )
    simple = {
        "classic": ClassicAttention,
        "mean": MaskedMeanPooling,
        "max": MaskedMaxPooling,
        "last": LastStepPooling,
    }
    if pooling not in simple:
        raise ValueError(f"unknown pooling {pooling!r}; known: attention, {', '.join(simple)}")
    return simple[pooling](name=POOLING_LAYER_NAME)


def build_model(
    settings: Mapping[str, Any],
    vocab_size: int,
    n_classes: int,
    learning_rate: float,
    clipnorm: float | None = None,
) -> keras.Model:
    """A compiled model; `settings` holds the model.* knobs (after hyperparameters)."""
    masked = settings["pooling"] != "classic"
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        vocab_size, settings["embedding_dim"], mask_zero=masked, name="embedding"
    )(tokens)
    if settings.get("dropout", 0.0) > 0:
        x = keras.layers.Dropout(settings["dropout"], name="embedding_dropout")(x)
    rnn = keras.layers.LSTM(settings["units"], return_sequences=True, name="lstm")
    if settings.get("bidirectional", False):
        rnn = keras.layers.Bidirectional(rnn, name="bilstm")
    states = rnn(x)
    pooling = make_pooling(settings)
    pooled = pooling(states)
    features = pooled[0] if isinstance(pooling, ATTENTION_LAYERS) else pooled
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


def has_attention(model: keras.Model) -> bool:
    return isinstance(model.get_layer(POOLING_LAYER_NAME), ATTENTION_LAYERS)


def attention_and_probs(
    model: keras.Model, token_ids: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (n, classes), attention weights over every step (n, steps))
    in one pass, padding steps included."""
    layer = model.get_layer(POOLING_LAYER_NAME)
    if not isinstance(layer, ATTENTION_LAYERS):
        raise ValueError(f"pooling layer {type(layer).__name__} has no attention weights")
    probe = keras.Model(model.inputs, [model.outputs[0], layer.output[1]])
    probs, weights = probe.predict(token_ids, batch_size=batch_size, verbose=0)
    return np.asarray(probs), np.asarray(weights)


def attention_matrix(
    model: keras.Model, token_ids: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Attention weights over every step, padding included, shape (n, steps)."""
    return attention_and_probs(model, token_ids, batch_size)[1]


def attention_weights(
    model: keras.Model, token_ids: np.ndarray, batch_size: int = 256
) -> list[np.ndarray]:
    """Per-example weights over the real tokens only (padding id 0 dropped).

    For masked attention they sum to 1; for `classic` the shortfall from 1 is the
    mass the model put on padding.
    """
    full = attention_matrix(model, token_ids, batch_size)
    return [row[ids != 0] for row, ids in zip(full, token_ids, strict=True)]
