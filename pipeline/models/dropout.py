"""Keras' Dropout with its mask generator named: Philox (the embedding dropout).

Keras' TensorFlow dropout leaves the generator to TensorFlow (`auto_select`). Inside an
XLA compilation that choice is made at run time, and XLA's CPU backend draws the mask ~30x
slower than with the generator named: a (64, 128, 32) mask took 58 ms under XLA against
2 ms named and 1.5 ms without XLA (an ad-hoc micro-benchmark), so with
`model.dropout=0.1` an XLA epoch took twice as long as one without XLA (12.1-12.4 s vs
6.7-7.0 s at 20,000 texts of 128 tokens; 4.0 s named). `auto_select` is Philox on a CPU,
with XLA and without: naming it draws the same bits, so a model trains exactly as with
Keras' layer (tests/test_sharded.py), and runs logged before reproduce unchanged.
"""

from __future__ import annotations

import keras

PACKAGE = "attention_search"  # the same registration package as the pooling layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class PhiloxDropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, its mask drawn with Philox (module doc); the same seed
    generator and the same seed as Keras' layer draws."""

    def call(self, inputs, training=False):
        if not (training and 0 < self.rate < 1) or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = self.seed_generator.next()
        if seed.dtype != tf.int32:  # as Keras casts it for TensorFlow's stateless ops
            seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        noise_shape = tf.shape(inputs)
        if self.noise_shape is not None:
            noise_shape = [
                noise_shape[i] if size is None else size for i, size in enumerate(self.noise_shape)
            ]
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=self.rate, seed=seed, noise_shape=noise_shape, rng_alg="philox"
        )
