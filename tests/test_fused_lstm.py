"""The fused LSTM kernel (pipeline/models/fused_lstm.py) computes what Keras' LSTM loop
computes, forward and backward, and steps aside where it would not."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.models.fused_lstm import FusedLSTM

LENGTHS = [12, 5, 1, 0, 7, 3, 12, 9]  # a row without any token too


def padded_tokens(vocab: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, (len(LENGTHS), max(LENGTHS))).astype("int32")
    for row, length in enumerate(LENGTHS):
        x[row, length:] = 0
    return x


def outputs_and_gradients(lstm: type, x: np.ndarray, bidirectional: bool, **kwargs):
    """The layer's outputs and the gradient of a loss reading every output (the padded
    steps and the final state included) with respect to every weight."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(50, 6, mask_zero=True)(tokens)
    rnn = lstm(5, return_state=not bidirectional, **kwargs)
    if bidirectional:
        rnn = keras.layers.Bidirectional(rnn)
    model = keras.Model(tokens, rnn(embedded))
    with tf.GradientTape() as tape:
        outs = model(x)
        outs = list(outs) if isinstance(outs, list | tuple) else [outs]
        loss = sum(tf.reduce_sum(o * tf.range(1.0, o.shape[-1] + 1)) for o in outs)
        loss += sum(tf.reduce_sum(o**2) for o in outs)
    grads = tape.gradient(loss, model.trainable_variables)
    return [o.numpy() for o in outs], [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize(
    "kwargs, bidirectional",
    [
        ({"return_sequences": True}, False),
        ({"return_sequences": False}, False),
        ({"return_sequences": True, "go_backwards": True}, False),
        ({"return_sequences": True}, True),
        ({"return_sequences": False}, True),
    ],
)
def test_fused_matches_keras_loop_on_masked_batches(kwargs, bidirectional):
    """Right-padded rows of every length (0 too): outputs (a padded step repeats the last
    real one), final states and every weight's gradient agree to float rounding."""
    x = padded_tokens()
    keras_out, keras_grads = outputs_and_gradients(keras.layers.LSTM, x, bidirectional, **kwargs)
    fused_out, fused_grads = outputs_and_gradients(FusedLSTM, x, bidirectional, **kwargs)
    assert len(keras_out) == len(fused_out)
    for ours, theirs in zip(fused_out, keras_out, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for ours, theirs in zip(fused_grads, keras_grads, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert np.abs(np.concatenate([g.ravel() for g in fused_grads])).max() > 0.1


def op_types(layer: keras.layers.Layer, jit: bool = False, **call) -> set[str]:
    embedded = keras.layers.Embedding(50, 6, mask_zero=True)
    fn = tf.function(lambda t: layer(embedded(t), **call), jit_compile=jit)
    graph = fn.get_concrete_function(tf.TensorSpec((None, None), tf.int32)).graph
    found = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():  # while loop bodies
        found |= {node.op for node in function.definition.node_def}
    return found


def test_fused_runs_one_op_and_falls_back_where_it_would_differ():
    """The fused op replaces the while loop; recurrent dropout while training (the op has
    none) and an XLA compilation (XLA has no kernel for it) run Keras' loop."""
    fused = op_types(FusedLSTM(5, return_sequences=True))
    assert "BlockLSTM" in fused and "While" not in fused and "StatelessWhile" not in fused
    plain = op_types(keras.layers.LSTM(5, return_sequences=True))
    assert "BlockLSTM" not in plain and plain & {"While", "StatelessWhile"}
    dropout = op_types(FusedLSTM(5, recurrent_dropout=0.3), training=True)
    assert "BlockLSTM" not in dropout
    xla = op_types(FusedLSTM(5), jit=True)
    assert "BlockLSTM" not in xla and xla & {"While", "StatelessWhile"}


def test_fused_refuses_a_mask_that_is_not_right_padded():
    x = padded_tokens()
    x[1, :3] = 0  # padding before the text
    embedded = keras.layers.Embedding(50, 6, mask_zero=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="right-padded"):
        FusedLSTM(5)(embedded(x))


def test_a_fused_model_saves_and_loads_as_one(tmp_path):
    """Saved under its registered name; the loaded model runs the fused op and predicts
    the same probabilities."""
    from pipeline.config import compose_config, to_plain
    from pipeline.models.build import build_model

    settings = to_plain(compose_config(["model.pooling=attention"]).model)
    assert settings["lstm_kernel"] == "fused"  # the default
    model = build_model(settings, 50, 3, learning_rate=0.01)
    assert isinstance(model.get_layer("lstm"), FusedLSTM)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("lstm"), FusedLSTM)
    x = padded_tokens()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    settings["lstm_kernel"] = "keras"
    assert type(build_model(settings, 50, 3, learning_rate=0.01).get_layer("lstm")) is (
        keras.layers.LSTM
    )
