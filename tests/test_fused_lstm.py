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


def outputs_and_gradients(
    lstm: type, x: np.ndarray, bidirectional: bool, jit: bool = False, **kwargs
):
    """The layer's outputs and the gradient of a loss reading every output (the padded
    steps and the final state included) with respect to every weight; `jit`: both in one
    XLA compilation, as a `jit_compile` train step runs them."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(50, 6, mask_zero=True)(tokens)
    rnn = lstm(5, return_state=not bidirectional, **kwargs)
    if bidirectional:
        rnn = keras.layers.Bidirectional(rnn)
    model = keras.Model(tokens, rnn(embedded))

    def run(x):
        with tf.GradientTape() as tape:
            outs = model(x)
            outs = list(outs) if isinstance(outs, list | tuple) else [outs]
            loss = sum(tf.reduce_sum(o * tf.range(1.0, o.shape[-1] + 1)) for o in outs)
            loss += sum(tf.reduce_sum(o**2) for o in outs)
        grads = tape.gradient(loss, model.trainable_variables)
        return outs, [tf.convert_to_tensor(g) for g in grads]

    outs, grads = tf.function(run, jit_compile=True)(x) if jit else run(x)
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


@pytest.mark.parametrize("jit", [False, True], ids=["blocklstm", "xla"])
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
def test_fused_matches_keras_loop_on_masked_batches(kwargs, bidirectional, jit):
    """Right-padded rows of every length (0 too): outputs (a padded step repeats the last
    real one), final states and every weight's gradient agree to float rounding, with the
    BlockLSTM op and with the XLA recurrence and its written-out backward pass (against
    Keras' loop run without XLA)."""
    x = padded_tokens()
    keras_out, keras_grads = outputs_and_gradients(keras.layers.LSTM, x, bidirectional, **kwargs)
    fused_out, fused_grads = outputs_and_gradients(FusedLSTM, x, bidirectional, jit, **kwargs)
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
    none) runs Keras' loop; an XLA compilation (XLA has no kernel for it) runs the XLA
    recurrence: a projection of every step before the loop and a custom gradient."""
    fused = op_types(FusedLSTM(5, return_sequences=True))
    assert "BlockLSTM" in fused and "While" not in fused and "StatelessWhile" not in fused
    plain = op_types(keras.layers.LSTM(5, return_sequences=True))
    assert "BlockLSTM" not in plain and plain & {"While", "StatelessWhile"}
    dropout = op_types(FusedLSTM(5, recurrent_dropout=0.3), training=True)
    assert "BlockLSTM" not in dropout
    xla = op_types(FusedLSTM(5), jit=True)
    assert "BlockLSTM" not in xla and xla & {"While", "StatelessWhile"}
    assert {"Einsum", "IdentityN"} <= xla
    assert not {"Einsum", "IdentityN"} & op_types(keras.layers.LSTM(5), jit=True)
    xla_dropout = op_types(FusedLSTM(5, recurrent_dropout=0.3), jit=True, training=True)
    assert "IdentityN" not in xla_dropout
    keras_under_xla = op_types(FusedLSTM(5, xla_lstm="keras"), jit=True)  # model.xla_lstm
    assert not {"Einsum", "IdentityN"} & keras_under_xla
    with pytest.raises(ValueError, match="bptt"):
        FusedLSTM(5, xla_lstm="unrolled")


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_kind", ["right-padded", "any", "none"])
def test_the_xla_recurrence_matches_keras_loop(mask_kind, go_backwards, zero_output_for_mask, jit):
    """`xla_recurrence` directly, beyond what the models use: any mask (gaps, padding
    first), initial states that are not zero (a masked first step keeps them; the
    outputs start from zeros), every output read by the loss (outputs, h and c); the
    gradients of the inputs, the initial states and every weight."""
    from pipeline.models.xla_lstm import xla_recurrence

    rng = np.random.default_rng(3)
    batch, steps, features, units = 5, 7, 3, 4
    x = tf.constant(rng.normal(size=(batch, steps, features)), tf.float32)
    h0, c0 = (tf.constant(rng.normal(size=(batch, units)), tf.float32) for _ in range(2))
    mask = {
        "right-padded": np.arange(steps)[None, :] < np.array([7, 3, 1, 0, 5])[:, None],
        "any": rng.random((batch, steps)) > 0.4,
        "none": None,
    }[mask_kind]
    readers = [
        rng.normal(size=s).astype("float32") for s in [(batch, steps, units)] + [(batch, units)] * 2
    ]
    keras.utils.set_random_seed(2)
    layer = keras.layers.LSTM(
        units, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    layer.zero_output_for_mask = zero_output_for_mask
    layer(x, initial_state=[h0, c0], mask=mask)

    def loss_and_grads(recurrence, x, h0, c0):
        with tf.GradientTape() as tape:
            tape.watch([x, h0, c0])
            outs = recurrence(x, h0, c0)
            loss = sum(tf.reduce_sum(o * r) for o, r in zip(outs, readers, strict=True))
        return [loss, *tape.gradient(loss, [x, h0, c0, *layer.trainable_variables])]

    def keras_loop(x, h0, c0):
        return layer(x, initial_state=[h0, c0], mask=mask)

    def ours(x, h0, c0):
        cell = layer.cell
        _, outputs, (h, c) = xla_recurrence(
            x,
            h0,
            c0,
            mask,
            cell.kernel,
            cell.recurrent_kernel,
            cell.bias,
            go_backwards,
            zero_output_for_mask,
        )
        return outputs, h, c

    expected = loss_and_grads(keras_loop, x, h0, c0)
    run = tf.function(loss_and_grads, jit_compile=True) if jit else loss_and_grads
    got = run(ours, x, h0, c0)
    for theirs, mine in zip(expected, got, strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-5, atol=1e-5)


def test_fused_refuses_a_mask_that_is_not_right_padded():
    x = padded_tokens()
    x[1, :3] = 0  # padding before the text
    embedded = keras.layers.Embedding(50, 6, mask_zero=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="right-padded"):
        FusedLSTM(5)(embedded(x))


def test_a_fused_model_saves_and_loads_as_one(tmp_path):
    """Saved under its registered name with its `xla_lstm`; the loaded model runs the fused
    op and predicts the same probabilities."""
    from pipeline.config import compose_config, to_plain
    from pipeline.models.build import build_model

    one_way = ["model.pooling=attention", "model.bidirectional=false"]  # the layer named lstm
    settings = to_plain(compose_config(one_way).model)
    assert settings["lstm_kernel"] == "fused"  # the default
    assert settings["xla_lstm"] == "bptt"  # the default
    assert build_model(settings, 50, 3, learning_rate=0.01).get_layer("lstm").xla_lstm == "bptt"
    model = build_model({**settings, "xla_lstm": "keras"}, 50, 3, learning_rate=0.01)
    assert isinstance(model.get_layer("lstm"), FusedLSTM)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("lstm"), FusedLSTM)
    assert loaded.get_layer("lstm").xla_lstm == "keras"
    x = padded_tokens()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    settings["lstm_kernel"] = "keras"
    assert type(build_model(settings, 50, 3, learning_rate=0.01).get_layer("lstm")) is (
        keras.layers.LSTM
    )
