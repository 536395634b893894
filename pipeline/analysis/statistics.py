"""Replicate statistics over trial runs: leaderboard by configuration, paired comparisons.

Input is one row per finished trial run with at least `group`, `label`, `seed`,
`data` and metric columns (see `pipeline.analysis.search_report.load_trials`). Pure pandas/scipy,
so reports never need TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import minimised
from pipeline.tracking import Metric

SUMMARISED = (
    Metric.VAL_ACCURACY,
    Metric.VAL_MACRO_F1,
    Metric.VAL_LOSS,
    Metric.ATTENTION_ON_KEYS,
    Metric.ATTENTION_ENTROPY,
    Metric.TRAIN_SECONDS,
    Metric.PARAM_COUNT,
)


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% t confidence interval of the mean (nan below 2 values)."""
    n = len(values)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def leaderboard(runs: pd.DataFrame, objective: str) -> pd.DataFrame:
    """One row per configuration: seeds, and mean/std/ci95 of each summarised metric."""
    rows = []
    for (data, label), frame in runs.groupby(["data", "label"], sort=False):
        row: dict[str, object] = {"data": data, "configuration": label, "seeds": len(frame)}
        for metric in SUMMARISED:
            if metric not in frame or frame[metric].isna().all():
                continue
            values = frame[metric].dropna().to_numpy(dtype=float)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row[f"{metric}_ci95"] = ci95(values)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(
        ["data", f"{objective}_mean"], ascending=[True, minimised(objective)]
    ).reset_index(drop=True)


@dataclass
class Comparison:
    data: str
    a: str
    b: str
    metric: str
    n: int  # matched seeds
    mean_diff: float  # a - b
    std_diff: float
    p_value: float
    effect_size: float  # Cohen's d_z: mean / std of the paired differences
    # Holm-adjusted over all pairs of the same data (many pairs, few seeds: some small
    # raw p-values are expected by chance); "beats" is decided on this one.
    p_adjusted: float = float("nan")
    n_pairs: int = 1

    def winner_loser(self) -> tuple[str, str, float]:
        """(better, worse, margin>=0) in the metric's good direction."""
        a_better = self.mean_diff < 0 if minimised(self.metric) else self.mean_diff > 0
        return (
            (self.a, self.b, abs(self.mean_diff))
            if a_better
            else (self.b, self.a, abs(self.mean_diff))
        )

    def sentence(self, alpha: float = 0.05) -> str:
        """Plain words, e.g. 'attention-tanh beats mean by 1.9 ± 0.6 points (p=0.01, 5 seeds)'."""
        points = not minimised(self.metric)
        scale = 100.0 if points else 1.0
        unit = " points" if points else ""
        better, worse, margin = self.winner_loser()
        spread = self.std_diff * scale
        adjusted = (
            f", Holm-adjusted p={self.p_adjusted:.3g} over {self.n_pairs} pairs"
            if self.n_pairs > 1
            else ""
        )
        detail = (
            f"{self.metric}, paired t-test p={self.p_value:.3g}{adjusted}, "
            f"|d|={abs(self.effect_size):.2f}, {self.n} seeds"
        )
        if self.std_diff == 0:  # the same difference on every seed: nothing to test
            if self.mean_diff == 0:
                return f"{self.a} and {self.b} score the same ({self.metric}, {self.n} seeds)"
            return (
                f"{better} beats {worse} by {margin * scale:.2f}{unit} on every one of "
                f"{self.n} seeds ({self.metric}; no spread, so no p-value)"
            )
        if np.isfinite(self.p_adjusted) and self.p_adjusted < alpha:
            return f"{better} beats {worse} by {margin * scale:.2f} ± {spread:.2f}{unit} ({detail})"
        return (
            f"no clear difference between {better} and {worse}: {margin * scale:.2f} ± "
            f"{spread:.2f}{unit} in favour of {better} ({detail})"
        )


def paired_comparisons(runs: pd.DataFrame, metric: str) -> list[Comparison]:
    """Every pair of configurations on the same data, on the seeds both have (>= 2)."""
    out = []
    for data, frame in runs.groupby("data", sort=False):
        by_seed = frame.pivot_table(index="seed", columns="label", values=metric, aggfunc="last")
        for a, b in combinations(by_seed.columns, 2):
            pair = by_seed[[a, b]].dropna()
            if len(pair) < 2:
                continue
            diff = (pair[a] - pair[b]).to_numpy(dtype=float)
            std = float(diff.std(ddof=1))
            if std > 0:
                p_value = float(stats.ttest_rel(pair[a], pair[b]).pvalue)
                effect = float(diff.mean() / std)
            else:  # identical differences on every seed: no spread to test against
                p_value, effect = float("nan"), float("nan")
            out.append(
                Comparison(
                    str(data),
                    str(a),
                    str(b),
                    metric,
                    len(pair),
                    float(diff.mean()),
                    std,
                    p_value,
                    effect,
                )
            )
    for data in {c.data for c in out}:
        holm([c for c in out if c.data == data])
    return sorted(out, key=lambda c: (c.data, np.nan_to_num(c.p_value, nan=1.0)))


def holm(comparisons: list[Comparison]) -> None:
    """Set `p_adjusted` (Holm step-down) on comparisons with a p-value."""
    tested = sorted((c for c in comparisons if np.isfinite(c.p_value)), key=lambda c: c.p_value)
    m = len(tested)
    running = 0.0
    for rank, c in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * c.p_value))
        c.p_adjusted, c.n_pairs = running, m
