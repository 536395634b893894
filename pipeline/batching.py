"""Length-bucketed batches: group examples by length and trim each batch to its bucket.

Masked LSTMs still pay for padded steps; trimming removes most of them. A bounded
number of buckets bounds the number of batch shapes, so TensorFlow traces a
bounded number of graphs. With bucketing off, every batch keeps the full width.
"""

from __future__ import annotations

import keras
import numpy as np


def bucket_widths(lengths: np.ndarray, n_buckets: int, max_width: int) -> np.ndarray:
    """Upper length of each bucket: quantiles of the lengths, always ending at the longest."""
    qs = np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)[1:], method="higher")
    widths = np.unique(np.clip(qs.astype(int), 1, max_width))
    return widths


class BucketedBatches(keras.utils.PyDataset):
    """A Keras PyDataset of (tokens, labels[, sample_weight]) batches.

    `order` lists example indices in the order the batches visit them (for
    un-permuting predictions when `shuffle=False`).
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
    ) -> None:
        super().__init__()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        lengths = np.maximum((x != 0).sum(axis=1), 1)
        if enabled:
            widths = bucket_widths(lengths, n_buckets, x.shape[1])
            bucket_of = np.searchsorted(widths, lengths)
            self.buckets = [(int(w), np.flatnonzero(bucket_of == b)) for b, w in enumerate(widths)]
        else:
            self.buckets = [(int(x.shape[1]), np.arange(len(x)))]
        self.buckets = [(w, idx) for w, idx in self.buckets if len(idx)]
        self._make_batches()

    def _make_batches(self) -> None:
        batches = []
        for width, idx in self.buckets:
            if self.shuffle:
                idx = self.rng.permutation(idx)
            for start in range(0, len(idx), self.batch_size):
                batches.append((width, idx[start : start + self.batch_size]))
        if self.shuffle:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        self.batches = batches

    @property
    def order(self) -> np.ndarray:
        return np.concatenate([idx for _, idx in self.batches])

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        width, idx = self.batches[i]
        xb = self.x[idx, :width]
        if self.y is None:
            return (xb,)
        if self.sample_weight is None:
            return xb, self.y[idx]
        return xb, self.y[idx], self.sample_weight[idx]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._make_batches()


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int, n_buckets: int,
                  enabled: bool = True) -> np.ndarray:
    """Class probabilities in the original example order, computed on bucketed batches."""
    batches = BucketedBatches(x, None, batch_size, n_buckets, enabled=enabled)
    probs = np.asarray(model.predict(batches, verbose=0))
    out = np.empty_like(probs)
    out[batches.order] = probs
    return out
