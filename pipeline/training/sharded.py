"""XLA train and test steps over shards of each batch, run at once (`train.xla.shards`).

XLA's CPU runtime runs a compiled program on one core: the LSTM's time loop, the
bulk of a step, is a chain of small matmuls it never spreads out
(docs/performance.md, "XLA"). So with
Keras' `jit_compile`, one core trained and the other idled. Here each batch is split
into `shards` row blocks; each block's forward pass, loss and gradients are one XLA
program (`jit_compile=True`, the same function for every block), and the step around them
is plain TensorFlow: its executor runs the blocks' calls on its inter-op threads at the
same time (they only read the weights), then the step averages their gradients by rows,
applies them once, and updates the loss and metrics on the whole batch. The same
update as Keras' step, to float rounding (tests/test_sharded.py).

Keras' extension point for this is `train_step`/`test_step`; the model's own class is
left alone (saved models do not change): `use_shards` sets them on the instance, and
removes them when a later fit of the same (kept) model asks for one block.

Dropout: a layer drawing random numbers writes its seed state (a variable) at every draw,
and TensorFlow orders calls that write one variable one after the other, so blocks with
dropout would run in turn. Each block instead runs in Keras' `StatelessScope` with its own
copy of every seed state, the key moved by the block's number: no block writes a
variable, the blocks draw independent masks, and afterwards the step stores block 0's
advanced states, as many draws further as Keras' own step would have gone. Deterministic
(a fit trains the same twice), though not Keras' masks bit for bit.
"""

from __future__ import annotations

import os
import types
from typing import Any

import keras

SHARDED = "_xla_shards"  # the instance attribute saying how many shards its steps use


def available_cores() -> int:
    """Cores TensorFlow's inter-op pool can use here (its thread setting, or the CPUs
    this process may run on)."""
    import tensorflow as tf

    threads = tf.config.threading.get_inter_op_parallelism_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(threads, cores or 1) if threads else (cores or 1))


SEED_STRIDE = 1_000_003  # block i draws with its seed key moved by i x this (a prime)


def seed_states(model: keras.Model) -> list:
    """The state variable of every seed generator in the model (dropout's among them)."""
    return [
        generator.state
        for layer in model._flatten_layers(include_self=True)
        for generator in getattr(layer, "_seed_generators", [])
    ]


def shards_for(setting: Any) -> int:
    """`train.xla.shards` as a number: `auto` is the available cores."""
    if str(setting).strip().lower() == "auto":
        return available_cores()
    return max(1, int(setting))


def _blocks(tensor, rows, shards: int) -> list:
    """`shards` row blocks of `tensor`, as even as `rows` allows (some may be empty)."""
    if tensor is None:
        return [None] * shards
    edges = [rows * i // shards for i in range(shards + 1)]
    return [tensor[edges[i] : edges[i + 1]] for i in range(shards)]


def _row_shares(blocks: list, rows) -> list:
    import tensorflow as tf

    total = tf.cast(rows, "float32")
    return [tf.cast(tf.shape(b)[0], "float32") / total for b in blocks]


def _weighted_sum(parts: list, shares: list):
    """Σ share * part; an empty block (share 0) adds nothing, NaNs of its mean included.
    Sparse gradients (the embedding's) stay sparse."""
    import tensorflow as tf

    if isinstance(parts[0], tf.IndexedSlices):
        return tf.IndexedSlices(
            tf.concat([p.values * s for p, s in zip(parts, shares, strict=True)], 0),
            tf.concat([p.indices for p in parts], 0),
            parts[0].dense_shape,
        )
    return tf.add_n(
        [tf.where(s > 0, p * s, tf.zeros_like(p)) for p, s in zip(parts, shares, strict=True)]
    )


def _unpack(data):
    from keras.src.trainers.data_adapters import data_adapter_utils

    return data_adapter_utils.unpack_x_y_sample_weight(data)


def _sharded_steps(model: keras.Model, shards: int):
    """(train_step, test_step) for `model`, each over `shards` blocks."""
    import tensorflow as tf

    seeds = seed_states(model)

    def block_gradients(x, y, sample_weight, block):
        moved = tf.stack([block * SEED_STRIDE, tf.zeros_like(block)])
        own = [(state, state.value + tf.cast(moved, state.dtype)) for state in seeds]
        with keras.StatelessScope(state_mapping=own) as scope:
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                scaled = model.optimizer.scale_loss(loss)
            advanced = [scope.get_current_value(state) for state in seeds]
        gradients = tape.gradient(scaled, model.trainable_weights)
        advanced = [a - tf.cast(moved, a.dtype) for a in advanced]  # back to the shared key
        return loss, y_pred, gradients, advanced

    def block_scores(x, y, sample_weight, block):
        del block  # no random numbers when not training
        y_pred = model(x, training=False)
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        return loss, y_pred

    gradients_of = tf.function(block_gradients, jit_compile=True)
    scores_of = tf.function(block_scores, jit_compile=True)

    def run_blocks(fn, data):
        x, y, sample_weight = _unpack(data)
        rows = tf.shape(x)[0]
        xs = _blocks(x, rows, shards)
        ys, ws = _blocks(y, rows, shards), _blocks(sample_weight, rows, shards)
        outs = [fn(xs[i], ys[i], ws[i], tf.constant(i, tf.int64)) for i in range(shards)]
        shares = _row_shares(xs, rows)
        loss = _weighted_sum([o[0] for o in outs], shares)
        model._loss_tracker.update_state(loss, sample_weight=rows)
        y_pred = tf.concat([o[1] for o in outs], 0)
        return x, y, sample_weight, outs, shares, y_pred

    def train_step(self, data):
        x, y, sample_weight, outs, shares, y_pred = run_blocks(gradients_of, data)
        if self.trainable_weights:
            gradients = [
                _weighted_sum([o[2][i] for o in outs], shares)
                for i in range(len(self.trainable_weights))
            ]
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        for state, advanced in zip(seeds, outs[0][3], strict=True):
            state.assign(advanced)  # as far as one draw a layer over the whole batch
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight, _, _, y_pred = run_blocks(scores_of, data)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step, test_step


def use_shards(model: keras.Model, shards: int) -> bool:
    """Give `model` steps over `shards` XLA blocks (Keras' own steps for 1, and its
    `jit_compile` then decides). True when that changed the steps, so the traced ones
    must go."""
    before = getattr(model, SHARDED, 1)
    if shards == before:
        return False
    if shards <= 1:
        for name in ("train_step", "test_step", SHARDED):
            model.__dict__.pop(name, None)
        return True
    train_step, test_step = _sharded_steps(model, shards)
    model.train_step = types.MethodType(train_step, model)
    model.test_step = types.MethodType(test_step, model)
    setattr(model, SHARDED, shards)
    return True


def shards_in_use(model: keras.Model) -> int:
    return int(getattr(model, SHARDED, 1))
