"""Build the classifier from model settings; read attention weights out of a trained model.

Embedding(mask_zero; pretrained weights, frozen or not) -> [Dropout] -> LSTM/BiLSTM
(return_sequences, optional recurrent dropout; Keras' loop or the fused kernel,
`model.lstm_kernel`) -> pooling
-> [Dense] -> Dense(n_classes, softmax). The pooling layer and whether the embedding
masks padding come from the pooling registry (`classic` turns masking off, as the
original recipe does, so it is numerically the same model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.models.dropout import PhiloxDropout
from pipeline.models.fused_lstm import lstm_layer
from pipeline.models.metrics import MacroF1
from pipeline.models.registry import PoolingVariant, variant_of

POOLING_LAYER_NAME = "pooling"


def build_model(
    settings: Mapping[str, Any],
    vocab_size: int,
    n_classes: int,
    learning_rate: float,
    clipnorm: float | None = None,
    steps_per_execution: int = 1,
    embeddings: np.ndarray | None = None,
) -> keras.Model:
    """A compiled model; `settings` holds the model.* knobs (after hyperparameters);
    `embeddings` (vocab_size, embedding_dim) are the embedding's starting weights
    (pretrained or trained-here vectors), frozen with `embedding_trainable: false`."""
    import pipeline.models.layers  # noqa: F401  (registers the layers and MacroF1)

    variant = variant_of(settings)
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        vocab_size,
        settings["embedding_dim"],
        mask_zero=variant.mask_aware,
        weights=None if embeddings is None else [np.asarray(embeddings, dtype="float32")],
        trainable=bool(settings.get("embedding_trainable", True)),
        name="embedding",
    )(tokens)
    if settings.get("dropout", 0.0) > 0:
        x = PhiloxDropout(settings["dropout"], name="embedding_dropout")(x)
    rnn = lstm_layer(settings)(
        settings["units"],
        return_sequences=True,
        recurrent_dropout=float(settings.get("recurrent_dropout", 0.0)),
        name="lstm",
    )
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
        steps_per_execution=steps_per_execution,
    )
    return model


# Runs a model: model -> (token ids -> every output, in the order of the rows).
Runner = Callable[[keras.Model], Callable[[np.ndarray], list[np.ndarray]]]


def keras_predict(batch_size: int = 256) -> Runner:
    """The plain runner: Keras' `predict` on full-width batches."""

    def runner(model: keras.Model) -> Callable[[np.ndarray], list[np.ndarray]]:
        def run(token_ids: np.ndarray) -> list[np.ndarray]:
            out = model.predict(token_ids, batch_size=batch_size, verbose=0)
            return [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]

        return run

    return runner


class _PadSteps(keras.layers.Layer):
    """Zero-pads the last (time) axis to `steps`: the probe's weights of trimmed batches."""

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def call(self, x):
        missing = self.steps - keras.ops.shape(x)[-1]
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, missing]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.steps)


@dataclass
class Probe:
    """One pass of a model with its attention exposed."""

    probs: np.ndarray  # (n, classes)
    weights: np.ndarray  # (n, heads, steps); 0 on padding
    uniform_probs: np.ndarray  # (n, classes) with uniform weights instead


class AttentionProbe:
    """The trained model with its attention exposed: one Keras model (sharing the trained
    layers) whose outputs are the class probabilities, every head's weights over every
    step (padding included, zero there) and the probabilities with uniform weights over
    each example's real tokens instead of the learned ones (the same heads and merge;
    `classic` too, although it was trained without a mask): the "is attention needed?"
    ablation, from the same LSTM states.

    `runner(probe_model)` returns the function that runs it: by default Keras' own
    `predict`; the search passes `training.batching.Forward` (length-bucketed batches
    through one traced function, so the probe is traced once and the faithfulness
    passes reuse it). Trimmed batches come back padded to `steps`.
    """

    def __init__(
        self,
        model: keras.Model,
        variant: PoolingVariant,
        steps: int,
        runner: Runner | None = None,
        batch_size: int = 256,
    ):
        from pipeline.models.layers import UniformAttention

        if not variant.attention_weights:
            raise ValueError(f"pooling '{variant.name}' has no attention weights")
        self.steps = steps
        # A copy of the pooling layer (same config and weights) asked for its weights: the
        # layer itself can't be reused, a Keras layer's outputs keep one structure per call.
        pooling = model.get_layer(POOLING_LAYER_NAME)
        weighted = type(pooling).from_config(
            {**pooling.get_config(), "name": f"{POOLING_LAYER_NAME}_weights"}
        )
        uniform = UniformAttention(
            heads=getattr(pooling, "heads", 1),
            merge=getattr(pooling, "merge", "concat"),
            name=f"{POOLING_LAYER_NAME}_uniform",
        )
        tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
        x, weights, flat = tokens, None, None
        for layer in model.layers:  # the model is a chain (see build_model)
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if layer.name == POOLING_LAYER_NAME:
                states = x
                if "per_head" in inspect.signature(type(pooling).call).parameters:
                    x, weights = weighted(states, return_attention_scores=True, per_head=True)
                else:  # a plugin layer with one weighting: (batch, steps)
                    x, weights = weighted(states, return_attention_scores=True)
                    weights = keras.ops.expand_dims(weights, 1)
                weighted.set_weights(pooling.get_weights())
                flat = uniform(states, mask=keras.ops.not_equal(tokens, 0))
                continue
            x = layer(x)
            if flat is not None:  # the layers after pooling see the uniform vector too
                flat = layer(flat)
        self.model = keras.Model(tokens, [x, _PadSteps(steps)(weights), flat])
        self.forward = (runner or keras_predict(batch_size))(self.model)

    def run(self, token_ids: np.ndarray) -> Probe:
        """Probabilities, weights (n, heads, steps) and uniform-weights probabilities."""
        if token_ids.shape[1] > self.steps:
            raise ValueError(f"inputs are {token_ids.shape[1]} steps wide, > {self.steps}")
        return Probe(*self.forward(token_ids))

    def predict(self, token_ids: np.ndarray) -> np.ndarray:
        """Class probabilities only (a `Predict` for the faithfulness passes)."""
        return self.run(token_ids).probs


def attention_and_probs(
    model: keras.Model,
    variant: PoolingVariant,
    token_ids: np.ndarray,
    batch_size: int = 256,
    per_head: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (n, classes), attention weights over every step (n, steps),
    or (n, heads, steps) with `per_head`) in one pass, padding steps included."""
    found = AttentionProbe(model, variant, token_ids.shape[1], batch_size=batch_size).run(token_ids)
    return found.probs, (found.weights if per_head else found.weights.mean(axis=1))


def uniform_attention_probs(
    model: keras.Model, variant: PoolingVariant, token_ids: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities with uniform weights over each example's real tokens instead of
    the learned ones (see `AttentionProbe`)."""
    probe = AttentionProbe(model, variant, token_ids.shape[1], batch_size=batch_size)
    return probe.run(token_ids).uniform_probs


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
