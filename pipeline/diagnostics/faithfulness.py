"""Is the attention an explanation? Faithfulness measured on a bounded evaluation subset.

Attention weights over recurrent states need not explain a prediction (Jain & Wallace
2019; Wiegreffe & Pinter 2019). These numbers say, per trained model, whether they do:

- **agreement with occlusion**: Kendall tau between the weights and occlusion saliency
  (the predicted class's probability drop when one real token becomes OOV) over each
  example's real tokens;
- **comprehensiveness** (ERASER, DeYoung et al. 2020): the predicted class's probability
  drop when the top-k ranked tokens are removed, next to removing k random real tokens;
- **sufficiency**: the drop when only the top-k ranked tokens are kept (lower: the
  ranked tokens suffice), also next to k random ones;
- **is attention needed?** (Wiegreffe & Pinter): the validation accuracy with the
  learned weights replaced by uniform weights over the real tokens, minus the model's.

k is a share of each example's real length (`fractions`, at least one token). Variants
without weights (mean, max, last) rank tokens by occlusion saliency instead, so every
variant gets comparable erasure numbers. Removing a token deletes it (the rest moves
up, padding grows at the end), as ERASER does.

Cost: every occluded, erased and kept copy of the subset goes through the model in two
bucketed `predict` passes; `max_occlusions` bounds the copies (examples x real tokens).
Pure NumPy apart from the `predict` callable; nothing here logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.tracking import Metric

OOV_ID = 1

Predict = Callable[[np.ndarray], np.ndarray]  # token ids (n, steps) -> class probs (n, c)


def evaluation_subset(
    token_ids: np.ndarray, y: np.ndarray, max_examples: int, max_occlusions: int, seed: int
) -> np.ndarray:
    """Sorted indices of a class-stratified random subset: at most `max_examples`, and
    as many as fit `max_occlusions` occluded copies (one per real token). Deterministic
    in `seed`, so every trial of a search is measured on the same examples."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    # Interleave the classes so any prefix of `order` is close to stratified.
    ranks = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = order[y[order] == c]
        ranks[members] = np.arange(len(members)) * len(y) // max(len(members), 1)
    order = order[np.argsort(ranks[order], kind="stable")]
    lengths = (token_ids[order] != 0).sum(axis=1)
    fits = np.cumsum(lengths) <= max_occlusions
    n = max(1, min(max_examples, int(fits.sum())))
    return np.sort(order[:n])


def compact(ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The row with only the real tokens where `keep` is true, moved up (padding after)."""
    kept = ids[(ids != 0) & keep]
    out = np.zeros_like(ids)
    out[: len(kept)] = kept
    return out


def occlusion_copies(token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(copies, example index, position): one copy per real token, that token set to OOV."""
    rows, positions = np.nonzero(token_ids != 0)
    copies = token_ids[rows].copy()
    copies[np.arange(len(rows)), positions] = OOV_ID
    return copies, rows, positions


def saliency_from_drops(
    token_ids: np.ndarray, rows: np.ndarray, positions: np.ndarray, drops: np.ndarray
) -> np.ndarray:
    """Occlusion saliency (n, steps): clipped probability drops, normalised per example to
    sum to 1 over its real tokens (uniform when no token lowers the prediction)."""
    out = np.zeros(token_ids.shape, dtype="float32")
    out[rows, positions] = np.clip(drops, 0.0, None)
    real = token_ids != 0
    totals = out.sum(axis=1, keepdims=True)
    uniform = real / np.maximum(real.sum(axis=1, keepdims=True), 1)
    return np.where(totals > 0, out / np.where(totals > 0, totals, 1.0), uniform).astype("float32")


def occlusion(predict: Predict, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (n, classes), occlusion saliency (n, steps)) in one `predict`
    pass over the examples and all their occluded copies."""
    copies, rows, positions = occlusion_copies(token_ids)
    both = predict(np.concatenate([token_ids, copies]))
    base, probs = both[: len(token_ids)], both[len(token_ids) :]
    pred = base.argmax(axis=1)
    drops = base[rows, pred[rows]] - probs[np.arange(len(rows)), pred[rows]]
    return base, saliency_from_drops(token_ids, rows, positions, drops)


def occlusion_saliency(predict: Predict, token_ids: np.ndarray) -> np.ndarray:
    """How much the predicted class's probability drops when each real token becomes OOV,
    normalised to sum to 1 over each example's real tokens. Model-agnostic (mean, max and
    last pooling too); saliency, not attention."""
    return occlusion(predict, token_ids)[1]


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (ties allowed; nan when either is constant):
    scipy.stats.kendalltau's statistic, vectorised over all pairs, because it runs on
    every example of every trial and scipy's per-call overhead dominated at this size."""
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    untied_a, untied_b = np.count_nonzero(da), np.count_nonzero(db)
    if untied_a == 0 or untied_b == 0:
        return float("nan")
    return float((da * db).sum() / np.sqrt(float(untied_a) * float(untied_b)))


def rank_agreement(weights: np.ndarray, saliency: np.ndarray, token_ids: np.ndarray) -> float:
    """Mean Kendall tau-b between two scores over each example's real tokens; examples
    with fewer than 2 tokens or a constant score are left out."""
    taus = []
    for w, s, ids in zip(weights, saliency, token_ids, strict=True):
        real = ids != 0
        if real.sum() < 2:
            continue
        tau = kendall_tau_b(w[real].astype(float), s[real].astype(float))
        if np.isfinite(tau):
            taus.append(tau)
    return float(np.mean(taus)) if taus else float("nan")


def top_k_masks(
    scores: np.ndarray, token_ids: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(top-k, random-k) boolean masks over real tokens, k = max(1, round(fraction x len))."""
    top = np.zeros(token_ids.shape, dtype=bool)
    rand = np.zeros(token_ids.shape, dtype=bool)
    for i, ids in enumerate(token_ids):
        real = np.flatnonzero(ids != 0)
        if len(real) == 0:
            continue
        k = min(len(real), max(1, int(round(fraction * len(real)))))
        # Stable order: ties broken by position, so the result does not depend on the sort.
        ranked = real[np.argsort(-scores[i, real], kind="stable")]
        top[i, ranked[:k]] = True
        rand[i, rng.choice(real, size=k, replace=False)] = True
    return top, rand


def percent(fraction: float) -> int:
    return int(round(fraction * 100))


def erasure_metrics(
    predict: Predict,
    token_ids: np.ndarray,
    base: np.ndarray,
    scores: np.ndarray,
    fractions: Sequence[float],
    seed: int,
) -> dict[str, float]:
    """Comprehensiveness and sufficiency of the top-k ranked tokens and of k random real
    tokens, every copy of every fraction in one `predict` pass."""
    rng = np.random.default_rng(seed)
    pred = base.argmax(axis=1)
    p_base = base[np.arange(len(pred)), pred]
    sets = []  # (metric name, copies)
    for f in fractions:
        top, rand = top_k_masks(scores, token_ids, f, rng)
        k = percent(f)
        for name, keep in (
            (Metric.comprehensiveness(k), ~top),
            (Metric.comprehensiveness(k, random=True), ~rand),
            (Metric.sufficiency(k), top),
            (Metric.sufficiency(k, random=True), rand),
        ):
            sets.append(
                (name, np.stack([compact(ids, m) for ids, m in zip(token_ids, keep, strict=True)]))
            )
    probs = predict(np.concatenate([copies for _, copies in sets]))
    out, n = {}, len(token_ids)
    for j, (name, _) in enumerate(sets):
        p = probs[j * n : (j + 1) * n][np.arange(n), pred]
        out[name] = float(np.mean(p_base - p))
    return out


@dataclass
class Faithfulness:
    """What `measure` found on the subset: metrics, and the saliency it computed."""

    metrics: dict[str, float]
    subset: np.ndarray
    saliency: np.ndarray  # (len(subset), steps): occlusion saliency of the subset


def measure(
    predict: Predict,
    token_ids: np.ndarray,
    subset: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    weights: np.ndarray | None = None,
) -> Faithfulness:
    """Faithfulness of `weights` (n, steps) over `token_ids` (the rows of `subset` are
    measured), or of occlusion saliency itself when the variant has no weights."""
    ids = token_ids[subset]
    base, saliency = occlusion(predict, ids)
    metrics: dict[str, float] = {Metric.FAITH_EXAMPLES: float(len(subset))}
    if weights is not None:
        ranking = weights[subset]
        metrics[Metric.FAITH_OCCLUSION_TAU] = rank_agreement(ranking, saliency, ids)
    else:
        ranking = saliency
    metrics.update(erasure_metrics(predict, ids, base, ranking, fractions, seed))
    return Faithfulness(metrics, subset, saliency)


def headline(metrics: dict[str, float], fraction: float) -> str:
    """The numbers a heatmap title carries, e.g. 'keys 86% top-1 0.97 | occl. tau 0.41 |
    comp@20% 0.62 (random 0.10) | uniform -12.3 pts'."""
    parts = []
    if Metric.ATTENTION_ON_KEYS in metrics:
        parts.append(
            f"keys {metrics[Metric.ATTENTION_ON_KEYS]:.0%} "
            f"top-1 {metrics[Metric.ATTENTION_TOP1_KEY_HIT]:.2f}"
        )
    if Metric.FAITH_OCCLUSION_TAU in metrics:
        parts.append(f"occl. tau {metrics[Metric.FAITH_OCCLUSION_TAU]:.2f}")
    k = percent(fraction)
    if Metric.comprehensiveness(k) in metrics:
        parts.append(
            f"comp@{k}% {metrics[Metric.comprehensiveness(k)]:.2f} "
            f"(random {metrics[Metric.comprehensiveness(k, random=True)]:.2f})"
        )
    if Metric.FAITH_UNIFORM_DELTA in metrics:
        parts.append(f"uniform {100 * metrics[Metric.FAITH_UNIFORM_DELTA]:+.1f} pts")
    return " | ".join(parts)
