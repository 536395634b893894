"""What a search returns: one summary row per trial run, per-configuration means, and
the summary table printed at the end. Pandas only (no TensorFlow, no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.config import VALIDATION_METRICS, minimised
from pipeline.models.registry import canonical_label
from pipeline.reporting.statistics import per_configuration
from pipeline.tracking import Metric, Status, TrialRun


@dataclass
class SearchOutcome:
    search_id: str
    parent_run_id: str
    trials: pd.DataFrame  # one row per trial run (configuration x seed), see `trial_row`
    best: dict[str, Any] | None  # the best configuration's `per_trial` row
    test_metrics: dict[str, float]
    ui_command: str
    exhausted: bool
    references: list = field(default_factory=list)  # ReferenceScore per reference run
    stopped: str | None = None  # why it ended before max_trials (search.stop.patience)


def _typed(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(value, value)


def new_row(
    number: int, trial_id: str, seed: int, variant: str, group: str, key: str, values: dict
) -> dict[str, Any]:
    """The summary row of a replicate about to train (FAILED until it finishes)."""
    return {
        "trial": number,
        "seed": seed,
        "variant": variant,
        "trial_id": trial_id,
        "group": group,
        "config_hash": key,
        "status": Status.FAILED,
        **values,
    }


def trial_row(run: TrialRun) -> dict[str, Any]:
    """The summary row of a stored trial run (a resumed search, or a cluster's workers)."""
    return {
        "trial": run.trial_number or 0,
        "variant": canonical_label(run.variant or ""),
        "trial_id": run.trial_id,
        "config_hash": run.config_hash,
        **({"seed": run.seed} if run.seed is not None else {}),
        **({"group": run.group} if run.group else {}),
        **({"worker": run.worker} if run.worker else {}),
        **({"pruned": int(run.metrics.get(Metric.EPOCHS_TRAINED, 0))} if run.pruned else {}),
        "status": run.status,
        **{k: _typed(v) for k, v in run.hyperparameters.items()},
        **{
            k: v
            for k, v in run.metrics.items()
            if k in VALIDATION_METRICS or k.startswith(DIAGNOSTIC_PREFIXES)
        },
        **(
            {Metric.PARAM_COUNT: run.metrics[Metric.PARAM_COUNT]}
            if Metric.PARAM_COUNT in run.metrics
            else {}
        ),
        "run_id": run.run_id,
        "seconds": run.seconds,
        **({"error": run.error} if run.error else {}),
    }


# Per-trial diagnostics kept with the validation metrics (averaged over seeds).
DIAGNOSTIC_PREFIXES = (Metric.ATTENTION_PREFIX, Metric.FAITH_PREFIX)


def headline_faithfulness(table: pd.DataFrame) -> list[str]:
    """The faithfulness columns a summary shows: comprehensiveness at the largest share
    next to its random baseline, and the uniform-weights delta."""
    comps = [
        c for c in table if c.startswith(Metric.comprehensiveness(0)[:-1]) and "random" not in c
    ]
    if not comps:
        return []
    top = max(comps, key=lambda c: int(c.rsplit("_", 1)[1]))
    k = int(top.rsplit("_", 1)[1])
    return [top, Metric.comprehensiveness(k, random=True), Metric.FAITH_UNIFORM_DELTA]


def per_trial(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: finished seeds averaged (metrics), counted (`seeds`),
    their spread kept (`*_std`); the first seed's run id stands for the trial."""
    finished = trials[trials["status"] == Status.FINISHED]
    if finished.empty:
        return finished
    metric_cols = [
        c
        for c in finished
        if (c in VALIDATION_METRICS or c.startswith(DIAGNOSTIC_PREFIXES))
        and pd.api.types.is_numeric_dtype(finished[c])
    ]
    return per_configuration(
        finished,
        "trial",
        mean=metric_cols,
        total=["seconds"] if "seconds" in finished else [],
        spread=[c for c in VALIDATION_METRICS if c in finished],
        sort=True,
    )


def ranked(table: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Configurations best first."""
    return table.sort_values(objective, ascending=minimised(objective))


def exhausted_space(kind: str, max_trials: int, trials: pd.DataFrame) -> bool:
    """The oracle ran out of configurations before max_trials (hyperband never does)."""
    n_configs = trials["trial"].nunique() if not trials.empty else 0
    return kind in ("grid", "random", "bayesian") and n_configs < max_trials


# Columns the summary never shows as hyperparameters (bookkeeping, or already spelled out
# by the variant label: see `summary_lines`).
BOOKKEEPING = {
    "trial",
    "trial_id",
    "status",
    "run_id",
    "seconds",
    "fit_seconds",
    "diagnostics_seconds",
    Metric.PARAM_COUNT,
    "pruned",
    "error",
    "variant",
    "config_hash",
    "rss_mb",
    "seed",
    "seeds",
    "group",
    "worker",
    *VALIDATION_METRICS,
}


def pruned_note(trials: pd.DataFrame) -> str:
    """', 3 pruned' when the pruner stopped runs early (they count as finished)."""
    if "pruned" not in trials:
        return ""
    n = int(trials["pruned"].notna().sum())
    return f", {n} pruned" if n else ""


def summary_lines(outcome: SearchOutcome, objective: str, top_k: int, max_trials: int) -> list[str]:
    """The table printed at the end of a search: its top configurations."""
    from pipeline.models.registry import label_knobs

    trials = outcome.trials
    finished = per_trial(trials)
    n_configs = trials["trial"].nunique()
    top = ranked(finished, objective).head(top_k)
    several = bool(len(top)) and top["seeds"].max() > 1
    hidden = BOOKKEEPING | label_knobs()
    hp_cols = [
        c
        for c in trials.columns
        if c not in hidden and not c.startswith(("tuner/", *DIAGNOSTIC_PREFIXES))
    ]
    keys = [c for c in (Metric.ATTENTION_ON_KEYS, *headline_faithfulness(top)) if c in top]
    spread = [f"{objective}_std", "seeds"] if several else []
    # A pruned trial says after which epoch it stopped.
    stopped = ["pruned"] if "pruned" in top and top["pruned"].notna().any() else []
    wanted = [
        "trial",
        objective,
        *spread,
        "variant",
        *hp_cols,
        *keys,
        *stopped,
        "seconds",
        "run_id",
    ]
    cols = [c for c in wanted if c in top]
    runs = f", {len(trials)} runs" if several else ""
    lines = [
        "",
        f"top {len(top)} of {n_configs} trials ({len(finished)} finished, "
        f"{n_configs - len(finished)} failed{runs}{pruned_note(trials)}) by {objective}"
        + (" (mean over seeds):" if several else ":"),
        top[cols].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"),
    ]
    if outcome.stopped:
        lines.append(f"note: {outcome.stopped}")
    if outcome.exhausted:
        lines.append(
            f"note: the search space was exhausted after {n_configs} trials "
            f"(tuner.max_trials={max_trials}); widen search_space for more."
        )
    if outcome.test_metrics:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in outcome.test_metrics.items())
        lines.append(f"best trial {outcome.best['trial']} on the held-out test split: {shown}")
    lines += reference_lines(outcome, objective)
    lines.append(f"parent run: {outcome.parent_run_id}  (search '{outcome.search_id}')")
    lines.append(f"open the UI: {outcome.ui_command}")
    return lines


def reference_lines(outcome: SearchOutcome, objective: str) -> list[str]:
    """Each reference under the table, with the best configuration's gap to it (the
    report says whether the gap is real)."""
    lines = []
    best = outcome.best[objective] if outcome.best else None
    by_name: dict[str, list[float]] = {}
    for ref in outcome.references:  # one per split with search.vary_split
        if ref.metrics.get(objective) is not None:
            by_name.setdefault(ref.name, []).append(float(ref.metrics[objective]))
    for name, scores in by_name.items():
        score = sum(scores) / len(scores)  # the best configuration's is a mean over seeds too
        splits = f" (mean over {len(scores)} splits)" if len(scores) > 1 else ""
        text = f"reference {name}: {objective} {score:.4f}{splits}"
        if best is not None:
            scale, unit = (1.0, "") if minimised(objective) else (100.0, " points")
            gap = (score - best if minimised(objective) else best - score) * scale
            text += (
                f"; the best configuration is {abs(gap):.2f}{unit} "
                f"{'above' if gap >= 0 else 'below'} it (python -m pipeline.report weighs it)"
            )
        lines.append(text)
    return lines
