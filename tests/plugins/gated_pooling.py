"""A pooling variant from outside `pipeline/`, registered the way a user would add one.

Gated attention: each real step gets a sigmoid gate; the weights are the gates
normalised over the real steps. Listed in a config's `plugins`, this module is all it
takes for searches, heatmaps, reports and benchmarks to know the variant.
"""

from __future__ import annotations

import keras
from keras import ops

from pipeline.models.registry import PoolingVariant, register_pooling


@keras.saving.register_keras_serializable(package="tests_plugins")
class GatedPooling(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.gate = self.add_weight(name="gate", shape=(int(input_shape[-1]), 1))

    def call(self, inputs, mask=None, return_attention_scores=False):
        gates = ops.sigmoid(ops.squeeze(ops.matmul(inputs, self.gate), -1))
        if mask is not None:
            gates = gates * ops.cast(mask, gates.dtype)
        weights = gates / ops.maximum(ops.sum(gates, axis=-1, keepdims=True), 1e-9)
        pooled = ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)
        return (pooled, weights) if return_attention_scores else pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None, return_attention_scores=False):
        batch, steps, dim = inputs.shape
        pooled = keras.KerasTensor((batch, dim), dtype=self.compute_dtype)
        if return_attention_scores:
            return pooled, keras.KerasTensor((batch, steps), dtype=self.compute_dtype)
        return pooled


register_pooling(
    PoolingVariant(
        "gated",
        lambda settings, name: GatedPooling(name=name),
        attention_weights=True,
        description="sigmoid gates normalised over real steps (a test plugin)",
    ),
    replace=True,  # imported again by a second config in the same process
)
