"""Paired evidence of two configurations on the same data: their validation predictions
matched seed by seed and example by example, and the two-level bootstrap of a difference
(`scipy.stats.bootstrap` resamples the seeds; within each drawn seed the validation
examples are resampled). Pure NumPy/SciPy: reports never import TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.models.scores import example_losses, macro_f1
from pipeline.tracking import Metric
from pipeline.tracking.records import Predictions

RESAMPLES = 2000


# Objectives with per-example evidence: what a prediction contributes to them.
PER_EXAMPLE = {
    Metric.VAL_ACCURACY: "accuracy",
    Metric.VAL_LOSS: "loss",
    Metric.VAL_MACRO_F1: "macro_f1",
}


@dataclass
class PairedEvidence:
    """Two configurations' validation predictions on the seeds both have, aligned by
    example id: arrays shaped (seeds, examples)."""

    seeds: list[int]
    y: np.ndarray
    probs_a: np.ndarray  # (seeds, examples, classes)
    probs_b: np.ndarray

    @property
    def n_examples(self) -> int:
        return int(self.y.shape[1])

    def score(self, kind: str, idx_seed: np.ndarray, idx_example: np.ndarray) -> np.ndarray:
        """Metric difference a - b per resample: mean over the drawn seeds of each seed's
        metric on its drawn examples. `idx_seed` (..., S), `idx_example` (..., S, n)."""
        rows = idx_seed[..., None]
        if kind == "macro_f1":
            y = self.y[rows, idx_example]
            k = self.probs_a.shape[-1]
            pa = self.probs_a.argmax(-1)[rows, idx_example]
            pb = self.probs_b.argmax(-1)[rows, idx_example]
            return (macro_f1(y, pa, k) - macro_f1(y, pb, k)).mean(axis=-1)
        per_example = self._per_example(kind)
        return per_example[rows, idx_example].mean(axis=(-1, -2))

    def _per_example(self, kind: str) -> np.ndarray:
        """(seeds, examples) difference a - b of each example's contribution."""
        if kind == "accuracy":
            right_a = self.probs_a.argmax(-1) == self.y
            right_b = self.probs_b.argmax(-1) == self.y
            return right_a.astype(float) - right_b.astype(float)
        if kind == "loss":
            return example_losses(self.probs_a, self.y) - example_losses(self.probs_b, self.y)
        raise ValueError(f"no per-example form for {kind!r}")

    def per_seed(self, kind: str) -> np.ndarray:
        """Each seed's metric difference on all its examples, shape (seeds,)."""
        s, n = self.y.shape
        every = np.broadcast_to(np.arange(n), (s, n))
        return np.array(
            [float(self.score(kind, np.array([i]), every[i : i + 1])) for i in range(s)]
        )

    def mcnemar(self) -> list[float]:
        """McNemar's exact/chi-square p per seed, on correctness (a cross-check)."""
        from statsmodels.stats.contingency_tables import mcnemar

        out = []
        for i in range(len(self.seeds)):
            right_a = self.probs_a[i].argmax(-1) == self.y[i]
            right_b = self.probs_b[i].argmax(-1) == self.y[i]
            table = [
                [np.sum(right_a & right_b), np.sum(right_a & ~right_b)],
                [np.sum(~right_a & right_b), np.sum(~right_a & ~right_b)],
            ]
            discordant = table[0][1] + table[1][0]
            out.append(float(mcnemar(table, exact=discordant < 25).pvalue))
        return out


def pair_predictions(a: dict[int, Predictions], b: dict[int, Predictions]) -> PairedEvidence | None:
    """Align two configurations' predictions on shared seeds and example ids (None when
    fewer than one seed matches or the seeds' example counts differ)."""
    seeds = sorted(set(a) & set(b))
    ys, pas, pbs = [], [], []
    for seed in seeds:
        pa, pb = a[seed], b[seed]
        common, ia, ib = np.intersect1d(pa.index, pb.index, return_indices=True)
        if len(common) == 0:
            return None
        ys.append(pa.y[ia])
        pas.append(pa.probs[ia])
        pbs.append(pb.probs[ib])
    if not seeds or len({len(y) for y in ys}) != 1:
        return None
    return PairedEvidence(seeds, np.stack(ys), np.stack(pas), np.stack(pbs))


def two_level_bootstrap(
    evidence: PairedEvidence, kind: str, resamples: int = RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the difference: scipy resamples the seeds; the statistic
    resamples each drawn seed's validation examples."""
    rng = np.random.default_rng(seed)
    s, n = evidence.y.shape

    def statistic(seed_idx, axis=-1):
        # n-1 of the n drawn seeds: the mean of S-1 draws with replacement has the
        # variance s^2/S of the seed mean (plain resampling of 3 seeds underestimates it
        # by a third, which lets seed noise pass for a difference).
        idx = np.asarray(seed_idx).astype(int)[..., : max(1, s - 1)]
        examples = rng.integers(0, n, size=(*idx.shape, n))
        return evidence.score(kind, idx, examples)

    result = stats.bootstrap(
        (np.arange(s),),
        statistic,
        vectorized=True,
        n_resamples=resamples,
        batch=max(1, 4_000_000 // (s * n)),  # bounded memory on long validation sets
        method="percentile",
        rng=rng,
    )
    return np.asarray(result.bootstrap_distribution)


def bootstrap_p(distribution: np.ndarray, estimate: float) -> float:
    """Two-sided p of "no difference" from a bootstrap distribution."""
    b = len(distribution)
    if np.all(distribution == distribution[0]):
        return 1.0 if estimate == 0 else 1.0 / (b + 1)
    below = (np.sum(distribution <= 0) + 1) / (b + 1)
    above = (np.sum(distribution >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))
