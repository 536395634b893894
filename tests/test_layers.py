"""Pooling layers and models: masking, padding invariance, the classic recipe, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from pipeline.models.build import attention_matrix, attention_weights, build_model
from pipeline.models.layers import (
    AttentionPooling,
    LastStepPooling,
    MaskedMaxPooling,
    MaskedMeanPooling,
)
from pipeline.models.registry import get_pooling

VOCAB, CLASSES = 40, 3
BASE = dict(embedding_dim=8, units=8, attention_activation="tanh", dropout=0.0)
VARIANTS = [
    {"pooling": "attention", "attention_activation": "tanh"},
    {"pooling": "attention", "attention_activation": "none"},
    {"pooling": "attention", "attention_activation": "tanh", "attention_hidden": 6},
    {"pooling": "mean"},
    {"pooling": "max"},
    {"pooling": "last"},
    {"pooling": "classic"},
    {"pooling": "attention", "bidirectional": True},
]
MASKED = [v for v in VARIANTS if v["pooling"] != "classic"]


def ids(v):
    return "-".join(str(x) for x in v.values())


def batch(width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((6, width), dtype=np.int32)
    for row, n in enumerate([3, 7, 12, 20, 25, 1]):
        x[row, :n] = rng.integers(2, VOCAB, size=n)
    return x


def model_for(variant, seed=0, learning_rate=0.01):
    keras.utils.set_random_seed(seed)
    return build_model({**BASE, **variant}, VOCAB, CLASSES, learning_rate=learning_rate)


@pytest.mark.parametrize("variant", [v for v in MASKED if v["pooling"] == "attention"], ids=ids)
def test_masked_attention_weights_zero_on_padding_and_sum_to_one(variant):
    x = batch(30)
    pooling = get_pooling(variant["pooling"])
    w = attention_matrix(model_for(variant), pooling, x)
    assert np.all(w[x == 0] == 0.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    trimmed = attention_weights(model_for(variant), pooling, x)
    assert [len(t) for t in trimmed] == list((x != 0).sum(axis=1))


@pytest.mark.parametrize("variant", MASKED, ids=ids)
def test_prediction_invariant_to_extra_padding(variant):
    model = model_for(variant)
    short = batch(40)
    long = np.zeros((len(short), 100), dtype=np.int32)
    long[:, :40] = short
    np.testing.assert_allclose(model(short), model(long), atol=1e-5)


def test_classic_is_not_padding_invariant_and_puts_weight_on_padding():
    model = model_for({"pooling": "classic"})
    x = batch(40)
    w = attention_matrix(model, get_pooling("classic"), x)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert w[x == 0].sum() > 0.1 * len(x)  # short rows are mostly padding
    long = np.zeros((len(x), 100), dtype=np.int32)
    long[:, :40] = x
    assert np.abs(model(x) - model(long)).max() > 1e-5


def original_recipe(units: int, steps: int) -> keras.Model:
    """The well-known Keras answer, Lambda and all."""
    inp = keras.Input(shape=(steps,), dtype="int32")
    emb = keras.layers.Embedding(VOCAB, BASE["embedding_dim"], mask_zero=False)(inp)
    lstm = keras.layers.LSTM(units, return_sequences=True)(emb)
    att = keras.layers.Dense(1, activation="tanh")(lstm)
    att = keras.layers.Flatten()(att)
    att = keras.layers.Activation("softmax")(att)
    att = keras.layers.RepeatVector(units)(att)
    att = keras.layers.Permute([2, 1])(att)
    rep = keras.layers.Multiply()([lstm, att])
    rep = keras.layers.Lambda(lambda t: ops.sum(t, axis=-2), output_shape=(units,))(rep)
    out = keras.layers.Dense(CLASSES, activation="softmax")(rep)
    return keras.Model(inp, out)


def test_classic_matches_original_recipe_numerically(tmp_path):
    steps = 30
    orig = original_recipe(BASE["units"], steps)
    ours = model_for({"pooling": "classic"}, seed=1)
    by_type = {type(layer).__name__: layer for layer in orig.layers}
    ours.get_layer("embedding").set_weights(by_type["Embedding"].get_weights())
    ours.get_layer("lstm").set_weights(by_type["LSTM"].get_weights())
    dense1, classifier = [layer for layer in orig.layers if isinstance(layer, keras.layers.Dense)]
    ours.get_layer("pooling").set_weights(dense1.get_weights())
    ours.get_layer("classifier").set_weights(classifier.get_weights())
    x = batch(steps)
    np.testing.assert_allclose(orig.predict(x, verbose=0), ours.predict(x, verbose=0), atol=1e-6)
    # The original's Lambda does not reload safely; ours does (round-trip test below).
    orig.save(tmp_path / "orig.keras")
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        keras.models.load_model(tmp_path / "orig.keras", safe_mode=True)


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_save_and_reload_safe_mode_gives_identical_predictions(variant, tmp_path):
    model = model_for(variant)
    rng = np.random.default_rng(7)  # weights a fresh build would not draw
    model.set_weights([w + rng.normal(0, 0.05, w.shape) for w in model.get_weights()])
    x = batch(30)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    # Eager calls: what is compared is the layers and weights, not a traced predict loop.
    np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_gradients_reach_the_embedding(variant):
    model = model_for(variant)
    x = batch(30)
    y = np.arange(len(x)) % CLASSES
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.get_layer("embedding").trainable_weights)
    dense = tf.convert_to_tensor(grads[0])
    assert float(tf.reduce_sum(tf.abs(dense))) > 0


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_tiny_model_overfits_tiny_batch(variant):
    model = model_for(variant, learning_rate=0.05)
    x = batch(25, seed=3)
    y = np.array([0, 1, 2, 0, 1, 2])
    for _ in range(60):
        model.train_on_batch(x, y)
    acc = (model.predict(x, verbose=0).argmax(1) == y).mean()
    assert acc == 1.0


def test_masked_pooling_ops_against_numpy():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)
    mean = np.asarray(MaskedMeanPooling()(h, mask=mask))
    mx = np.asarray(MaskedMaxPooling()(h, mask=mask))
    last = np.asarray(LastStepPooling()(h, mask=mask))
    for i in range(3):
        real = h[i, mask[i]]
        np.testing.assert_allclose(mean[i], real.mean(0), atol=1e-6)
        np.testing.assert_allclose(mx[i], real.max(0), atol=1e-6)
        np.testing.assert_allclose(last[i], real[-1], atol=1e-6)
    h_neg = -np.abs(h)  # padding zeros must not win the max
    mx_neg = np.asarray(MaskedMaxPooling()(h_neg, mask=mask))
    assert np.all(mx_neg < 0)


def test_attention_layer_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        AttentionPooling(activation="relu")
