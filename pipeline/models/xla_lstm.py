"""The LSTM recurrence for XLA with its backward pass written out (`model.lstm_kernel: fused`
inside a `jit_compile` step).

XLA has no `BlockLSTM` kernel, so under `jit_compile` the fused layer used to fall back to
Keras' loop, and XLA compiled TensorFlow's automatic gradient of it. That gradient is
slow on a CPU in two ways (perf and the optimised HLO of a train step, docs/performance.md "XLA"):
- the gradient of the loop's output `TensorArray` zeroes one step of a (time, batch,
  units) buffer per iteration, and XLA cannot do that in place next to the reads of the
  same buffer: it copies the whole buffer twice a step, quadratic in the width (~20% of
  a steady epoch at 128 tokens was `memmove`);
- each step accumulates its share of the weight gradients with small matmuls, and pushes
  a copy of the input kernel for them.

Here (cuDNN's layout of the work): the input projection of every step is one matmul
before the loop; the forward loop keeps the gates and the carried states; the backward
loop only carries dh/dc through the recurrence (one small matmul a step) and writes each
step's gate gradient; the weight and input gradients are three large matmuls after it.

The same math as Keras' masked loop, to float rounding (tests/test_fused_lstm.py): a
masked step keeps the states and repeats the last output (zeros before the first, or
zeros at every masked step with `zero_output_for_mask`), any mask (not only right
padding), `go_backwards` as Keras runs it (the whole sequence reversed, outputs in
processing order). Keras' gate layout (i, f, c, o), tanh and sigmoid only: the caller
(`FusedLSTM`) checks that, and that no dropout applies.
"""

from __future__ import annotations


def xla_recurrence(
    sequences, h0, c0, mask, kernel, recurrent_kernel, bias, go_backwards, zero_output_for_mask
):
    """(last output, outputs (batch, time, units), [h, c]) as Keras' LSTM loop returns them;
    arguments as `fused_lstm.fused_recurrence` takes them."""
    import tensorflow as tf

    x = tf.transpose(tf.convert_to_tensor(sequences), [1, 0, 2])  # time-major
    if mask is None:
        m = tf.ones(tf.shape(x)[:2], x.dtype)
    else:
        m = tf.cast(tf.transpose(tf.cast(mask, tf.bool)), x.dtype)
    if go_backwards:
        x, m = tf.reverse(x, [0]), tf.reverse(m, [0])
    states, c = _recurrence(
        x,
        tf.stop_gradient(m)[:, :, None],
        tf.convert_to_tensor(h0),
        tf.convert_to_tensor(c0),
        tf.convert_to_tensor(kernel),
        tf.convert_to_tensor(recurrent_kernel),
        tf.convert_to_tensor(bias),
    )
    if zero_output_for_mask:  # zeros at every masked step
        outputs = states * m[:, :, None]
    else:  # a masked step repeats the last output: the carried state, zeros before any
        started = tf.cumsum(m, axis=0)[:, :, None] > 0
        outputs = tf.where(started, states, tf.zeros_like(states))
    outputs = tf.transpose(outputs, [1, 0, 2])
    return outputs[:, -1], outputs, [states[-1], c]


def _recurrence(x, m, h0, c0, kernel, recurrent_kernel, bias):
    """Time-major x (T, B, E), float mask m (T, B, 1) -> the carried h of every step
    (T, B, U) (a masked step keeps the last) and the final c (B, U)."""
    import tensorflow as tf

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, units = tf.shape(x)[0], tf.shape(recurrent_kernel)[0]
        projected = tf.einsum("tbe,eg->tbg", x, kernel) + bias  # every step's x W + b
        # One tanh for the four gates: sigmoid(z) = tanh(z / 2) / 2 + 1 / 2 (i, f, o),
        # tanh itself for the cell input (Keras' order: i, f, c, o).
        is_cell = tf.range(4 * units) // units == 2
        scale = tf.where(is_cell, 1.0, 0.5)[None, :]
        shift = tf.where(is_cell, 0.0, 0.5)[None, :]

        def forward(t, h, c, kept):
            z = projected[t] + tf.matmul(h, recurrent_kernel)
            gates = tf.tanh(z * scale) * scale + shift
            i, f, g, o = tf.split(gates, 4, axis=1)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            keep = m[t] > 0
            h, c = tf.where(keep, h_new, h), tf.where(keep, c_new, c)
            return t + 1, h, c, kept.write(t, tf.concat([gates, h, c], axis=1))

        _, _, _, kept = tf.while_loop(
            lambda t, *_: t < steps,
            forward,
            (0, h0, c0, tf.TensorArray(x.dtype, size=steps, element_shape=[None, None])),
            maximum_iterations=steps,
        )
        kept = kept.stack()  # (T, B, 6U): gates, h, c
        gates_all, states, cells = tf.split(kept, [4 * units, units, units], axis=2)
        prev_states = tf.concat([h0[None], states[:-1]], axis=0)
        prev_cells = tf.concat([c0[None], cells[:-1]], axis=0)

        def grad(d_states, d_c):
            d_states = _or_zeros(d_states, states)
            recurrent_t = tf.transpose(recurrent_kernel)

            def backward(k, dh, dc, dz_all):
                t = steps - 1 - k  # reverse time
                mt = m[t]
                gates, c_prev = gates_all[t], prev_cells[t]
                i, f, g, o = tf.split(gates, 4, axis=1)
                tc = tf.tanh(f * c_prev + i * g)
                dh = dh + d_states[t]
                dh_new = mt * dh
                dc_new = mt * dc + dh_new * o * (1 - tc * tc)
                upstream = tf.concat([dc_new * g, dc_new * c_prev, dc_new * i, dh_new * tc], 1)
                dz = upstream * tf.where(is_cell, 1 - gates * gates, gates * (1 - gates))
                dc = (1 - mt) * dc + dc_new * f
                dh = (1 - mt) * dh + tf.matmul(dz, recurrent_t)
                return k + 1, dh, dc, dz_all.write(t, dz)

            _, dh, dc, dz_all = tf.while_loop(
                lambda k, *_: k < steps,
                backward,
                (
                    0,
                    tf.zeros_like(h0),
                    _or_zeros(d_c, c0),  # the final c's gradient enters at the last step
                    tf.TensorArray(x.dtype, size=steps, element_shape=[None, None]),
                ),
                maximum_iterations=steps,
            )
            dz = dz_all.stack()  # (T, B, 4U)
            flat_dz = tf.reshape(dz, [-1, 4 * units])
            d_kernel = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[2]]), flat_dz, transpose_a=True)
            d_recurrent = tf.matmul(tf.reshape(prev_states, [-1, units]), flat_dz, transpose_a=True)
            d_bias = tf.reduce_sum(flat_dz, axis=0)
            d_x = tf.einsum("tbg,eg->tbe", dz, kernel)
            return d_x, dh, dc, d_kernel, d_recurrent, d_bias

        return (states, cells[-1]), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


def _or_zeros(gradient, like):
    """TensorFlow passes None for an output nothing downstream used."""
    import tensorflow as tf

    return tf.zeros_like(like) if gradient is None else gradient
