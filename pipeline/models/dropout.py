"""Dropout whose mask comes from the Philox generator by name (`model.xla_dropout: philox`).

Keras' TensorFlow dropout leaves the generator to TensorFlow (`auto_select`): Philox in
TensorFlow's own kernels, ThreeFry inside an XLA compilation, which XLA's CPU backend
runs as scalar code. A (64, 128, 32) mask took 58 ms under XLA against 1.5 ms without it
and 2 ms with Philox under XLA (an ad-hoc micro-benchmark), so with `model.dropout=0.1`
an XLA epoch took twice as long as one without XLA. Naming Philox draws the same bits
as Keras' layer without XLA (tests/test_sharded.py): runs trained without XLA train
exactly as before. Under XLA the masks differ from ThreeFry's; runs logged before the
key reproduce with Keras' layer (`keras`).
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


def dropout_layer(settings) -> type[keras.layers.Dropout]:
    """The dropout layer `model.xla_dropout` names (config.schema.XlaDropout)."""
    from pipeline.config.schema import XlaDropout

    if XlaDropout(settings.get("xla_dropout", "keras")) == XlaDropout.philox:
        return PhiloxDropout
    return keras.layers.Dropout
