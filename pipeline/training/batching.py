"""Length-bucketed batches: group examples by length and trim each batch to its bucket.

Masked LSTMs still pay for padded steps; trimming removes most of them. A bounded
number of buckets bounds the number of batch shapes, so TensorFlow traces a
bounded number of graphs. With bucketing off, every batch keeps the full width.

Exact mode goes further: one bucket per length, so no batch holds any padding and no
LSTM step is spent on it. The model still computes its (all-ones) mask: a Keras 3
functional graph records the mask op when it is built, and a twin graph without it
measured no faster. Batches have an unknown width in the dataset's signature, so Keras
traces its train step once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np


def bucket_widths(lengths: np.ndarray, n_buckets: int, max_width: int) -> np.ndarray:
    """Upper length of each bucket: quantiles of the lengths, always ending at the longest."""
    qs = np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)[1:], method="higher")
    return np.unique(np.clip(qs.astype(int), 1, max_width))


class BucketedBatches:
    """Batches of (tokens, labels[, sample_weight]) trimmed to their bucket's width.

    Iterating yields one epoch; with `shuffle`, each epoch reshuffles examples within
    buckets and the order of batches. `order` lists example indices in visiting order
    (for un-permuting predictions when `shuffle=False`).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        batch_size: int = 64,
        n_buckets: int = 4,
        enabled: bool = True,
        shuffle: bool = False,
        seed: int = 0,
        sample_weight: np.ndarray | None = None,
        exact: bool = False,
    ) -> None:
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = batch_size
        self.pool_remainders = False  # see with_pooled_remainders
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        lengths = np.maximum((x != 0).sum(axis=1), 1)
        self.exact = bool(enabled and exact)
        if self.exact:
            widths = np.unique(np.clip(lengths, 1, x.shape[1]))
            bucket_of = np.searchsorted(widths, lengths)
            buckets = [(int(w), np.flatnonzero(bucket_of == b)) for b, w in enumerate(widths)]
        elif enabled:
            widths = bucket_widths(lengths, n_buckets, x.shape[1])
            bucket_of = np.searchsorted(widths, lengths)
            buckets = [(int(w), np.flatnonzero(bucket_of == b)) for b, w in enumerate(widths)]
        else:
            buckets = [(int(x.shape[1]), np.arange(len(x)))]
        self.buckets = [(w, idx) for w, idx in buckets if len(idx)]
        self.batches = self._plan(shuffle=False)

    def with_pooled_remainders(self) -> BucketedBatches:
        """The same batches, except that each bucket's last partial batch goes into a pool
        batched at the widest of their widths: n_buckets full shapes + 1 partial, not up
        to 2 x n_buckets (XLA compiles one program per shape, ~2.5-5.5 s each here). Not
        in exact mode, which promises batches without padding."""
        if self.exact or self.pool_remainders or len(self.buckets) < 2:
            return self
        pooled = copy.copy(self)
        pooled.pool_remainders = True
        pooled.rng = copy.deepcopy(self.rng)
        pooled.batches = pooled._plan(shuffle=False)
        return pooled

    def _plan(self, shuffle: bool) -> list[tuple[int, np.ndarray]]:
        plan, rest = [], []
        size = self.batch_size
        for width, idx in self.buckets:
            if shuffle:
                idx = self.rng.permutation(idx)
            whole = len(idx) - len(idx) % size if self.pool_remainders else len(idx)
            for start in range(0, whole, size):
                plan.append((width, idx[start : start + size]))
            if whole < len(idx):
                rest.append((width, idx[whole:]))
        if rest:  # padding a row further changes nothing a masked model computes for it
            width, pooled = max(w for w, _ in rest), np.concatenate([i for _, i in rest])
            for start in range(0, len(pooled), size):
                plan.append((width, pooled[start : start + size]))
        if shuffle:
            plan = [plan[i] for i in self.rng.permutation(len(plan))]
        return plan

    @property
    def order(self) -> np.ndarray:
        return np.concatenate([idx for _, idx in self.batches])

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple]:
        if self.shuffle:
            self.batches = self._plan(shuffle=True)
        for width, idx in self.batches:
            xb = self.x[idx, :width]
            if self.y is None:
                yield (xb,)
            elif self.sample_weight is None:
                yield xb, self.y[idx]
            else:
                yield xb, self.y[idx], self.sample_weight[idx]

    def dataset(self):
        """A tf.data.Dataset over these batches, reshuffled each time it is iterated (each
        epoch). Python runs once per epoch, to draw the epoch's plan (the same batches in the
        same order as iterating this object); slicing the batches out of the token matrix
        runs in tf.data's own threads, so a train step never waits on the GIL. tf.data's
        autotuning is off: nothing here is AUTOTUNE'd, and its model thread made the
        destruction of every iterator (each epoch's, and Keras' garbage that the next trial's
        collection frees) wait for it, 0.3-1.4 s at a time (perf: RootDataset::Iterator's
        destructor joining it); the default search took ~13% longer, with the same numbers."""
        import tensorflow as tf

        x = tf.constant(self.x, tf.int32)
        columns = [] if self.y is None else [tf.constant(self.y, tf.int32)]
        if self.y is not None and self.sample_weight is not None:
            columns.append(tf.constant(self.sample_weight, tf.float32))

        def epoch_plan() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            if self.shuffle:
                self.batches = self._plan(shuffle=True)
            yield (
                np.concatenate([idx for _, idx in self.batches]).astype(np.int64),
                np.asarray([len(idx) for _, idx in self.batches], np.int64),
                np.asarray([width for width, _ in self.batches], np.int64),
            )

        def batches_of(indices, sizes, widths):
            starts = tf.cumsum(sizes, exclusive=True)
            return tf.data.Dataset.from_tensor_slices((starts, sizes, widths)).map(
                lambda start, size, width: (indices[start : start + size], width)
            )

        def batch(rows, width):
            return (tf.gather(x, rows)[:, :width], *(tf.gather(c, rows) for c in columns))

        plan_spec = tuple(tf.TensorSpec((None,), tf.int64) for _ in range(3))
        options = tf.data.Options()
        options.autotune.enabled = False
        return (
            tf.data.Dataset.from_generator(epoch_plan, output_signature=plan_spec)
            .flat_map(batches_of)
            .map(batch)
            .prefetch(2)
            .with_options(options)
        )


def predict_proba(
    model, x: np.ndarray, batch_size: int, n_buckets: int, enabled: bool = True
) -> np.ndarray:
    """Class probabilities in the original example order, computed on bucketed batches
    (trimmed when `enabled`, as training's). Through `Forward`: the same numbers as Keras'
    `predict` bit for bit (tests/test_training.py), 3-4x faster for one pass, where
    tracing Keras' predict function is most of the cost."""
    return Forward(model, batch_size, n_buckets).outputs(x, trims=enabled)[0]


class Forward:
    """A model's inference pass over length-bucketed batches, outputs in the original order.

    One `tf.function` with an unknown batch and width, so any number of calls (the
    attention probe, occlusion and erasure copies) trace the model once; Keras'
    `predict` machinery costs twice as much per first call and per call at the sizes
    the attention diagnostics use. TensorFlow backend.
    """

    def __init__(self, model, batch_size: int = 256, n_buckets: int = 1, trims: bool = True):
        import tensorflow as tf

        self.batch_size, self.n_buckets = batch_size, n_buckets
        self.trims = trims and n_buckets > 1
        self.fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, None), tf.int32)],
        )

    def outputs(self, x: np.ndarray, trims: bool | None = None) -> list[np.ndarray]:
        """Every output of the model (one or several), in the order of `x`'s rows; `trims`
        overrides the batches' trimming (None: as constructed)."""
        trims = self.trims if trims is None else trims
        plan = BucketedBatches(x, None, self.batch_size, self.n_buckets, enabled=trims)
        parts = []
        for (xb,) in plan:
            out = self.fn(xb.astype(np.int32))
            parts.append([np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])])
        merged = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
        ordered = [np.empty_like(m) for m in merged]
        for dst, src in zip(ordered, merged, strict=True):
            dst[plan.order] = src
        return ordered

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output (class probabilities): a `Predict` for the diagnostics."""
        return self.outputs(x)[0]
