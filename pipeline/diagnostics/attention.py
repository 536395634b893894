"""Attention numbers: metrics over weights, a fixed example panel, and
`inspect_attention`, which gathers them (and the faithfulness numbers of
`faithfulness.py`) for one trained model.

Pure NumPy apart from the model calls (a `predict` callable and the attention
probes of `pipeline.models.build`). Weights are full matrices (n, steps) including
padded steps, so the padding share of the `classic` baseline can be measured. Nothing
here logs: the search logs what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.diagnostics.faithfulness import Predict, headline, measure, occlusion_saliency
from pipeline.tracking import Metric


def attention_metrics(
    weights: np.ndarray, token_ids: np.ndarray, key_mask: np.ndarray | None = None
) -> dict[str, float]:
    """Entropy, padding share and (with ground truth) key share and top-1 hit rate.

    - attention_entropy: entropy of the weights over each example's real tokens
      (renormalised), divided by log(real length); mean over examples of length >= 2.
      1.0 is uniform, 0.0 all weight on one token.
    - attention_on_padding: mean share of the weight on padded steps.
    - attention_on_keys: mean share of the weight on planted key tokens.
    - attention_top1_key_hit: share of examples whose highest weight sits on a key.
    """
    real = token_ids != 0
    lengths = real.sum(axis=1)
    out = {Metric.ATTENTION_ON_PADDING: float(np.mean(np.where(real, 0.0, weights).sum(axis=1)))}
    entropies = []
    for w, r, n in zip(weights, real, lengths, strict=True):
        if n < 2:
            continue
        p = w[r]
        total = p.sum()
        if total <= 0:
            continue
        p = p / total
        nz = p[p > 0]
        entropies.append(float(-(nz * np.log(nz)).sum() / np.log(n)))
    out[Metric.ATTENTION_ENTROPY] = float(np.mean(entropies)) if entropies else float("nan")
    if key_mask is not None:
        out[Metric.ATTENTION_ON_KEYS] = float(np.mean(np.where(key_mask, weights, 0.0).sum(axis=1)))
        top = weights.argmax(axis=1)
        out[Metric.ATTENTION_TOP1_KEY_HIT] = float(np.mean(key_mask[np.arange(len(top)), top]))
    return out


def choose_panel(y: np.ndarray, n_classes: int, size: int, seed: int) -> np.ndarray:
    """Indices of a fixed panel: the same for every trial of a search, every class covered."""
    rng = np.random.default_rng(seed)
    per_class = max(1, size // n_classes)
    picked: list[int] = []
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        picked.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return np.asarray(sorted(picked), dtype=np.int64)


@dataclass
class PanelRow:
    """One example of the panel, as plotted and exported."""

    tokens: list[str]
    weights: list[float]  # over the real tokens only
    true_label: str
    predicted_label: str
    padding_mass: float
    key_positions: list[int]
    # Multi-head attention: every head's weights over the real tokens (`weights` is
    # their mean); empty for one head.
    head_weights: list[list[float]] = field(default_factory=list)


def panel_rows(
    weights: np.ndarray,
    token_ids: np.ndarray,
    vocab: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    key_mask: np.ndarray | None = None,
    head_weights: np.ndarray | None = None,
) -> list[PanelRow]:
    rows = []
    for i, ids in enumerate(token_ids):
        real = ids != 0
        heads = (
            [] if head_weights is None else [[float(w) for w in h[real]] for h in head_weights[i]]
        )
        rows.append(
            PanelRow(
                tokens=[vocab[t] if t < len(vocab) else "[UNK]" for t in ids[real]],
                weights=[float(w) for w in weights[i][real]],
                true_label=class_names[int(y_true[i])],
                predicted_label=class_names[int(y_pred[i])],
                padding_mass=float(weights[i][~real].sum()),
                key_positions=(
                    np.flatnonzero(key_mask[i][real]).tolist() if key_mask is not None else []
                ),
                head_weights=heads,
            )
        )
    return rows


@dataclass
class AttentionView:
    """What a trained model attends to on the panel, and its attention metrics."""

    kind: str  # "attention" (the layer's weights) or "saliency" (occlusion, no weights)
    title: str
    rows: list[PanelRow]
    metrics: dict[str, float]  # attention metrics (whole validation split), faithfulness
    probs: np.ndarray | None = None  # the whole validation split's, when computed anyway


@dataclass(frozen=True)
class FaithfulnessPlan:
    """Which examples faithfulness is measured on and how (the same for every trial)."""

    subset: np.ndarray  # validation indices
    fractions: tuple[float, ...]
    seed: int


def inspect_attention(
    model,
    variant,
    data,
    panel: np.ndarray,
    label: str,
    predict: Predict,
    faithfulness: FaithfulnessPlan | None = None,
    runner=None,
) -> AttentionView:
    """The panel's weights (or occlusion saliency when the pooling variant has none), the
    attention metrics and, with a plan, the faithfulness metrics. `predict` gives the
    model's class probabilities; `runner` runs the attention probe (see
    `AttentionProbe`; the search passes length-bucketed batches)."""
    from pipeline.models.build import AttentionProbe

    x_val = data.x["val"]
    keys = data.key_masks["val"] if data.key_masks else None
    panel_ids = x_val[panel]
    metrics: dict[str, float] = {}
    probs = full = heads = None
    if variant.attention_weights:  # one pass: weights, predictions, uniform ablation
        kind = "attention"
        probe = AttentionProbe(model, variant, x_val.shape[1], runner)
        predict = probe.predict  # traced once for every pass below
        found = probe.run(x_val)
        probs, full = found.probs, found.weights.mean(axis=1)
        if found.weights.shape[1] > 1:
            heads = found.weights[panel]
        metrics = attention_metrics(full, x_val, keys)
        weights, panel_probs = full[panel], probs[panel]
        if faithfulness is not None:
            y = data.y["val"]
            metrics[Metric.FAITH_UNIFORM_DELTA] = float(
                np.mean(found.uniform_probs.argmax(axis=1) == y)
                - np.mean(probs.argmax(axis=1) == y)
            )
    else:
        kind = "saliency"
        panel_probs, weights = None, occlusion_saliency(predict, panel_ids)
    if faithfulness is not None:
        found_faith = measure(
            predict, x_val, faithfulness.subset, faithfulness.fractions, faithfulness.seed, full
        )
        metrics.update(found_faith.metrics)
    if panel_probs is None:
        panel_probs = predict(panel_ids)
    rows = panel_rows(
        weights,
        panel_ids,
        data.vocab,
        data.y["val"][panel],
        panel_probs.argmax(axis=1),
        data.class_names,
        keys[panel] if keys is not None else None,
        heads,
    )
    title = f"{label}: {kind}" + (
        " (occlusion saliency, not attention)" if kind == "saliency" else ""
    )
    numbers = headline(metrics, max(faithfulness.fractions) if faithfulness else 0.0)
    if numbers:
        title += f"\n{numbers}"
    return AttentionView(kind, title, rows, metrics, probs)
