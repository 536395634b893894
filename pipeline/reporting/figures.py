"""A search's figures (matplotlib, Agg): the comparison of its trials, replicates,
trade-offs, the forest plot of comparisons. Functions return figures and log nothing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.tracking import Metric  # noqa: E402


def comparison_figure(frame, objective: str) -> Figure:
    """Per-variant strip plot of the objective (and attention on keys, when known)."""
    keys = Metric.ATTENTION_ON_KEYS
    metrics = [objective] + ([keys] if keys in frame else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    variants = sorted(frame["variant"].unique())
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, v in enumerate(variants):
            vals = frame.loc[frame["variant"] == v, metric].dropna().to_numpy(dtype=float)
            if len(vals):
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, alpha=0.8)
                ax.hlines(np.median(vals), i - 0.25, i + 0.25, color="black")
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("trials per pooling variant (bar = median)")
    fig.tight_layout()
    return fig


def replicates_figure(runs, board, objective: str) -> Figure:
    """Each configuration's seeds (dots) with the mean and its 95% CI, per dataset."""
    datasets = list(board["data"].unique())
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(max(5.0, 1.1 * len(board)) * len(datasets) ** 0.5 + 2, 4.2),
        squeeze=False,
    )
    for ax, data in zip(axes[0], datasets, strict=True):
        rows = board[board["data"] == data]
        for i, (_, row) in enumerate(rows.iterrows()):
            seeds = runs[(runs["data"] == data) & (runs["label"] == row["configuration"])]
            values = seeds[objective].to_numpy(dtype=float)
            ax.scatter(
                np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)),
                values,
                alpha=0.6,
                s=18,
            )
            ci = row.get(f"{objective}_ci95", np.nan)
            ax.errorbar(
                i + 0.3,
                row[f"{objective}_mean"],
                yerr=0 if np.isnan(ci) else ci,
                fmt="o",
                color="black",
                capsize=4,
            )
        ax.set_xticks(range(len(rows)), list(rows["configuration"]), rotation=30, ha="right")
        ax.set_title(f"{data}: {objective} per seed (black: mean ± 95% CI)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def tradeoff_figure(board, objective: str) -> Figure:
    """Mean objective against mean training time per configuration (the cost of units)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for data, rows in board.groupby("data", sort=False):
        x, y = rows["train_seconds_mean"], rows[f"{objective}_mean"]
        ax.errorbar(x, y, yerr=rows[f"{objective}_std"].fillna(0), fmt="o", capsize=3, label=data)
        for _, row in rows.iterrows():
            ax.annotate(
                row["configuration"],
                (row["train_seconds_mean"], row[f"{objective}_mean"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("training time per run (s, mean over seeds)")
    ax.set_ylabel(f"{objective} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forest_figure(comparisons, objective: str) -> Figure:
    """Each comparison's difference (a - b) with its 95% interval, the equivalence margin
    shaded around zero; colour says the verdict."""
    colours = {"beats": "#1a7f37", "equivalent": "#1f5fbf", "underpowered": "#9a6700"}
    rows = list(comparisons)
    # Two lines a label (the pair, then data and verdict); the figure widens with the
    # longest line, so labels of several knobs are not cut at the left edge.
    labels = [f"{c.a} - {c.b}\n({c.data}): {c.verdict}" for c in reversed(rows)]
    longest = max((len(part) for label in labels for part in label.split("\n")), default=0)
    fig, ax = plt.subplots(figsize=(max(7.5, 4.5 + 0.075 * longest), 1.2 + 0.6 * len(rows)))
    for i, c in enumerate(rows):
        scale, unit = c.scale
        lo, hi = c.ci95
        y = len(rows) - 1 - i
        ax.errorbar(
            c.diff * scale,
            y,
            xerr=[[(c.diff - lo) * scale], [(hi - c.diff) * scale]],
            fmt="o",
            color=colours.get(c.verdict, "black"),
            capsize=4,
        )
    if rows:
        scale, unit = rows[0].scale
        margin = rows[0].margin * scale
        ax.axvspan(
            -margin, margin, color="#dddddd", alpha=0.6, label=f"{rows[0].margin_text()} margin"
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    unit_text = rows[0].scale[1].strip() if rows else ""
    ax.set_xlabel(f"difference in {objective} ({unit_text or 'metric units'}), 95% interval")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
