"""Keras' LSTM with its CPU recurrence in one TensorFlow kernel (`model.lstm_kernel: fused`).

Keras runs an LSTM on a CPU as a `tf.while_loop` over time steps, a dozen small ops per
step plus the mask's `where`s, and TensorFlow traces that loop and its gradient in
Python for every new model. TensorFlow's `BlockLSTM` op (the kernel behind the old
`LSTMBlockFusedCell`) computes the same recurrence over the whole sequence in one op,
with a fused gradient op. What it saves is the loop's per-model trace and instantiation
(~2 s a trial here: the default search 103 s vs 134 s); epochs in steady state run at
0.83-1.05x the loop's speed, faster only on exact-length buckets (docs/performance.md, "Training
speed").

This is the extension point Keras gives backends for its cuDNN path: `LSTM.inner_loop`
tries an optimised implementation and falls back to the generic loop. Here the fused op
runs when it computes exactly what Keras' loop does, and the loop runs otherwise:
recurrent dropout or the LSTM's own input dropout while training, activations other than
tanh/sigmoid, no bias, unroll, a backend other than TensorFlow. Inside an XLA compilation
(`jit_compile`), which has no `BlockLSTM` kernel, the same conditions run
`xla_lstm.xla_recurrence` (`model.xla_lstm: bptt`: a loop whose backward pass is written
out, not TensorFlow's gradient of Keras' loop), or Keras' loop (`keras`).

Same weights, same gate layout on the outside (Keras' i, f, c, o; the op wants i, c, f, o,
reordered per call), same outputs as Keras' masked loop (tests/test_fused_lstm.py, to
float rounding): a masked step repeats the last real output (zeros before the first, or
always with `zero_output_for_mask`, as `Bidirectional` sets it), the final state is the
last real step's, `go_backwards` reverses each example's real tokens. The op has one
sequence length per batch, so padding must be on the right, as `pipeline.data` encodes
it (Keras' cuDNN path asks the same); another mask fails with an error saying so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras

from pipeline.models.xla_lstm import xla_recurrence

PACKAGE = "attention_search"  # the same registration package as the pooling layers


def _in_xla_compilation() -> bool:
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def fused_recurrence(
    sequences, h0, c0, mask, kernel, recurrent_kernel, bias, go_backwards, zero_output_for_mask
):
    """(last output, outputs (batch, time, units), [h, c]) as Keras' LSTM loop returns them
    (`zero_output_for_mask`: padded steps output zeros, as `Bidirectional` asks)."""
    import tensorflow as tf

    steps = tf.shape(sequences)[1]
    if mask is None:
        lengths = tf.fill(tf.shape(sequences)[:1], steps)
    else:
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        right_padded = tf.reduce_all(tf.equal(mask, tf.sequence_mask(lengths, steps)))
        tf.debugging.Assert(
            right_padded,
            [
                "model.lstm_kernel=fused needs right-padded masks (pad token ids after the "
                "text); use model.lstm_kernel=keras for other masks"
            ],
        )
    x = sequences
    if go_backwards:  # each example's real tokens reversed, its padding still after them
        x = tf.reverse_sequence(x, tf.cast(lengths, tf.int64), seq_axis=1, batch_axis=0)
    i, f, c, o = tf.split(tf.concat([kernel, recurrent_kernel], axis=0), 4, axis=1)
    bi, bf, bc, bo = tf.split(bias, 4)
    units = tf.shape(recurrent_kernel)[0]
    no_peephole = tf.zeros([units], x.dtype)
    _, cs, _, _, _, _, h = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(tf.reduce_max(lengths), tf.int64),
        x=tf.transpose(x, [1, 0, 2]),  # time-major
        cs_prev=c0,
        h_prev=h0,
        w=tf.concat([i, c, f, o], axis=1),
        wci=no_peephole,
        wcf=no_peephole,
        wco=no_peephole,
        b=tf.concat([bi, bc, bf, bo], axis=0),
        forget_bias=0.0,
        cell_clip=-1.0,  # no clipping
        use_peephole=False,
    )
    h, cs = tf.transpose(h, [1, 0, 2]), tf.transpose(cs, [1, 0, 2])
    last = tf.maximum(lengths - 1, 0)
    started = (lengths > 0)[:, None]  # a row with no real token keeps the initial state
    h_last = tf.where(started, tf.gather(h, last, batch_dims=1), h0)
    c_last = tf.where(started, tf.gather(cs, last, batch_dims=1), c0)
    real = tf.sequence_mask(lengths, steps)[:, :, None]
    if go_backwards:  # Keras' order: the whole sequence reversed, padding first (zeros)
        real_outputs = tf.where(real, h, tf.zeros_like(h))
        outputs = tf.reverse(
            tf.reverse_sequence(real_outputs, tf.cast(lengths, tf.int64), 1, 0), axis=[1]
        )
        last_output = tf.where(started, h_last, tf.zeros_like(h_last))
    elif zero_output_for_mask:
        outputs = tf.where(real, h, tf.zeros_like(h))
        last_output = outputs[:, -1]
    else:  # a padded step repeats the last real output, zeros before any
        carried = tf.gather(h, tf.minimum(tf.range(steps)[None, :], last[:, None]), batch_dims=1)
        outputs = tf.where(started[:, :, None], carried, tf.zeros_like(carried))
        last_output = outputs[:, -1]
    return last_output, outputs, [h_last, c_last]


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` whose TensorFlow CPU recurrence is one fused op (module doc);
    `xla_lstm` (config.schema.XlaLstm): inside an XLA compilation, `bptt` runs
    `xla_lstm.xla_recurrence`, `keras` Keras' loop."""

    def __init__(self, *args, xla_lstm: str = "bptt", **kwargs):
        from pipeline.config.schema import XlaLstm

        super().__init__(*args, **kwargs)
        if xla_lstm not in set(XlaLstm):
            raise ValueError(f"model.xla_lstm: '{xla_lstm}' is not one of {', '.join(XlaLstm)}")
        self.xla_lstm = XlaLstm(xla_lstm).value

    def get_config(self) -> dict:
        return {**super().get_config(), "xla_lstm": self.xla_lstm}

    def _fused_applies(self, training: bool) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and not self.recurrent_dropout
            and not (training and self.dropout)
            and not self.unroll
            and self.cell.use_bias
            and self.cell.activation is keras.activations.tanh
            and self.cell.recurrent_activation is keras.activations.sigmoid
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, list | tuple):
            mask = mask[0]
        if not self._fused_applies(bool(training)):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if not _in_xla_compilation():
            recurrence = fused_recurrence
        elif self.xla_lstm == "bptt":
            recurrence = xla_recurrence
        else:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        last_output, outputs, states = recurrence(
            sequences,
            initial_state[0],
            initial_state[1],
            mask,
            self.cell.kernel,
            self.cell.recurrent_kernel,
            self.cell.bias,
            self.go_backwards,
            self.zero_output_for_mask,
        )
        return last_output, outputs, states


def lstm_layer(settings: Mapping[str, Any]) -> Callable[..., keras.layers.LSTM]:
    """The LSTM layer `model.lstm_kernel` names (config.schema.LstmKernel), with
    `model.xla_lstm` for the fused one; called with the layer's own arguments."""
    from pipeline.config.schema import LstmKernel

    if LstmKernel(settings.get("lstm_kernel", "keras")) == LstmKernel.fused:
        return functools.partial(FusedLSTM, xla_lstm=settings.get("xla_lstm", "bptt"))
    return keras.layers.LSTM
