"""Replicate statistics over trial runs: the leaderboard by configuration (comparisons
between configurations are `comparisons.py`).

Input is one row per finished trial run with at least `group`, `label`, `seed`,
`data` and metric columns (see `pipeline.reporting.evidence.load_trials`). Pure pandas/scipy,
so reports never need TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    Metric.ATTENTION_TOP1_KEY_HIT,
    Metric.TRAIN_SECONDS,
    Metric.PARAM_COUNT,
)


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% t confidence interval of the mean (nan below 2 values)."""
    n = len(values)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def per_configuration(
    frame: pd.DataFrame,
    by: str,
    mean: Sequence[str] = (),
    total: Sequence[str] = (),
    spread: Sequence[str] = (),
    sort: bool = False,
) -> pd.DataFrame:
    """One row per configuration (`by`: trial number, group, ...) over its seeds: the
    first run's other columns, `mean` columns averaged, `total` summed, `spread` with a
    `<col>_std`, and `seeds` counted. The one seed aggregation of the search summary and
    the knob-importance table."""
    grouped = frame.groupby(by, sort=sort)
    table = grouped.first()
    if mean:
        table[list(mean)] = grouped[list(mean)].mean()
    for col in total:
        table[col] = grouped[col].sum()
    for col in spread:
        table[f"{col}_std"] = grouped[col].std(ddof=1)
    table["seeds"] = grouped.size()
    return table.reset_index()


def leaderboard(runs: pd.DataFrame, objective: str) -> pd.DataFrame:
    """One row per configuration: seeds, and mean/std/ci95 of each summarised metric."""
    rows = []
    faithfulness = sorted(c for c in runs if c.startswith(Metric.FAITH_PREFIX))
    for (data, label), frame in runs.groupby(["data", "label"], sort=False):
        row: dict[str, object] = {"data": data, "configuration": label, "seeds": len(frame)}
        if "pruned" in frame:
            row["pruned"] = int(frame["pruned"].fillna(False).astype(bool).sum())
        for metric in (*SUMMARISED, *faithfulness):
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
