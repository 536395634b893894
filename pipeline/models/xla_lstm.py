"""The LSTM recurrence for XLA with its backward pass written out (`model.lstm_kernel: fused`
inside a `jit_compile` step).

XLA has no `BlockLSTM` kernel, so under `jit_compile` the fused layer used to fall back to
Keras' loop, and XLA compiled TensorFlow's automatic gradient of it. That gradient is
slow on a CPU in two ways (perf and the optimised HLO of a train step, README "XLA"):
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
    outputs, h, c = _recurrence(
        x,
        tf.stop_gradient(m)[:, :, None],
        tf.convert_to_tensor(h0),
        tf.convert_to_tensor(c0),
        tf.convert_to_tensor(kernel),
        tf.convert_to_tensor(recurrent_kernel),
        tf.convert_to_tensor(bias),
        bool(zero_output_for_mask),
    )
    outputs = tf.transpose(outputs, [1, 0, 2])
    return outputs[:, -1], outputs, [h, c]


def _recurrence(x, m, h0, c0, kernel, recurrent_kernel, bias, zero_output_for_mask):
    """Time-major x (T, B, E) and float mask m (T, B, 1) -> outputs (T, B, U), h, c."""
    import tensorflow as tf

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, units = tf.shape(x)[0], tf.shape(recurrent_kernel)[0]
        projected = tf.einsum("tbe,eg->tbg", x, kernel) + bias  # every step's x W + b

        def forward(t, h, c, out, gates, h_prev, c_prev, outs):
            z = projected[t] + tf.matmul(h, recurrent_kernel)
            zi, zf, zc, zo = tf.split(z, 4, axis=1)
            i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zc), tf.sigmoid(zo)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            keep = m[t] > 0
            gates = gates.write(t, tf.concat([i, f, g, o], axis=1))
            h_prev, c_prev = h_prev.write(t, h), c_prev.write(t, c)
            if zero_output_for_mask:
                out = tf.where(keep, h_new, tf.zeros_like(h_new))
            else:
                out = tf.where(keep, h_new, out)
            h, c = tf.where(keep, h_new, h), tf.where(keep, c_new, c)
            return t + 1, h, c, out, gates, h_prev, c_prev, outs.write(t, out)

        def arrays(width):
            return tf.TensorArray(x.dtype, size=steps, element_shape=[None, width])

        _, h, c, _, gates, h_prev, c_prev, outs = tf.while_loop(
            lambda t, *_: t < steps,
            forward,
            (0, h0, c0, tf.zeros_like(h0), arrays(None), arrays(None), arrays(None), arrays(None)),
            maximum_iterations=steps,
        )
        gates, h_prev, c_prev = gates.stack(), h_prev.stack(), c_prev.stack()
        outputs = outs.stack()

        def grad(d_outputs, d_h, d_c):
            d_outputs = _or_zeros(d_outputs, outputs)
            d_h, d_c = _or_zeros(d_h, h), _or_zeros(d_c, c)
            recurrent_t = tf.transpose(recurrent_kernel)

            def backward(t, dh, dc, dout, dz_all):
                t = steps - 1 - t  # reverse time
                mt = m[t]
                i, f, g, o = tf.split(gates[t], 4, axis=1)
                c_new = f * c_prev[t] + i * g
                tc = tf.tanh(c_new)
                if zero_output_for_mask:
                    dh_new = mt * (dh + d_outputs[t])
                else:
                    total = d_outputs[t] + dout
                    dh_new = mt * (dh + total)
                    dout = (1 - mt) * total
                dc_new = mt * dc + dh_new * o * (1 - tc * tc)
                dz = tf.concat(
                    [
                        dc_new * g * i * (1 - i),
                        dc_new * c_prev[t] * f * (1 - f),
                        dc_new * i * (1 - g * g),
                        dh_new * tc * o * (1 - o),
                    ],
                    axis=1,
                )
                dc = (1 - mt) * dc + dc_new * f
                dh = (1 - mt) * dh + tf.matmul(dz, recurrent_t)
                return steps - t, dh, dc, dout, dz_all.write(t, dz)

            _, dh, dc, _, dz_all = tf.while_loop(
                lambda t, *_: t < steps,
                backward,
                (0, d_h, d_c, tf.zeros_like(d_h), arrays(None)),
                maximum_iterations=steps,
            )
            dz = dz_all.stack()  # (T, B, 4U)
            flat_dz = tf.reshape(dz, [-1, 4 * units])
            d_kernel = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[2]]), flat_dz, transpose_a=True)
            d_recurrent = tf.matmul(tf.reshape(h_prev, [-1, units]), flat_dz, transpose_a=True)
            d_bias = tf.reduce_sum(flat_dz, axis=0)
            d_x = tf.einsum("tbg,eg->tbe", dz, kernel)
            return d_x, dh, dc, d_kernel, d_recurrent, d_bias

        return (outputs, h, c), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


def _or_zeros(gradient, like):
    """TensorFlow passes None for an output nothing downstream used."""
    import tensorflow as tf

    return tf.zeros_like(like) if gradient is None else gradient
