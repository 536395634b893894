"""The search ledger: which search a run continues, and what it already did.

Reads the tracking store (through `Tracker`) to decide whether a command starts a new
search or continues one (same `search.name`, or `search.resume`), refuses to continue
a search whose results would not be comparable, and rebuilds the records of trials a
resumed search already ran. No TensorFlow here, so these checks answer fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from pipeline.config import config_hash, to_plain
from pipeline.errors import SearchError
from pipeline.tracking import Tracker

METRIC_KEYS = ("val_accuracy", "val_loss", "val_macro_f1")


def plan_search_name(cfg: DictConfig, tracker: Tracker) -> str:
    """The name this run will use: the given one, the latest (with resume), or a new one."""
    if cfg.search.name:
        return cfg.search.name
    if cfg.search.resume:
        latest = tracker.find_search(None)
        if latest is None:
            raise SearchError(
                f"search.resume: no earlier search in experiment "
                f"'{tracker.experiment_name}' of {tracker.uri}"
            )
        return latest.data.tags["search_id"]
    return search_name(cfg)


def search_name(cfg: DictConfig) -> str:
    return cfg.search.name or datetime.now().strftime("search-%Y%m%d-%H%M%S")


def comparable_hash(cfg: DictConfig, fingerprint: str) -> str:
    """What must not change when a search is resumed (max_trials may grow)."""
    tuner = {
        k: v
        for k, v in to_plain(cfg.tuner).items()
        if k not in ("max_trials", "directory", "max_consecutive_failed_trials")
    }
    return config_hash(
        {
            "space": to_plain(cfg.search_space),
            "model": to_plain(cfg.model),
            "train": to_plain(cfg.train),
            "tuner": tuner,
            "data": fingerprint,
            "seeds": to_plain(cfg.search).get("seeds"),
        }
    )


@dataclass
class SearchPlan:
    name: str
    parent_id: str | None  # an existing parent run to continue, or None for a new search


def plan_search(cfg: DictConfig, tracker: Tracker, comparable: str) -> SearchPlan:
    """New search or continuation: same name (or search.resume) continues, if comparable."""
    wanted = cfg.search.name
    existing = tracker.find_search(wanted) if (wanted or cfg.search.resume) else None
    if cfg.search.resume and existing is None:
        what = f"no search named '{wanted}'" if wanted else "no earlier search"
        raise SearchError(
            f"search.resume: {what} in experiment '{tracker.experiment_name}' of {tracker.uri}"
        )
    if existing is None:
        return SearchPlan(search_name(cfg), None)
    name = existing.data.tags["search_id"]
    if existing.data.tags.get("comparable_hash") != comparable:
        if not cfg.search.force_new:
            raise SearchError(
                f"search '{name}' exists with a different search space, data or training "
                "config, so its results would not be comparable; pick another search.name, "
                "or add search.force_new=true to start it again from scratch"
            )
        tracker.set_run_tag(existing.info.run_id, "superseded", "true")
        return SearchPlan(name, None)
    if cfg.search.force_new:
        tracker.set_run_tag(existing.info.run_id, "superseded", "true")
        return SearchPlan(name, None)
    return SearchPlan(name, existing.info.run_id)


def _typed(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(value, value)


def previous_records(tracker: Tracker, parent_id: str) -> list[dict[str, Any]]:
    """Trials a resumed search already ran (interrupted ones are re-run, so left out)."""
    records = []
    for run in tracker.children(parent_id):
        tags = run.data.tags
        if tags.get("interrupted") == "true" or run.info.status not in ("FINISHED", "FAILED"):
            continue
        records.append(
            {
                "trial": int(tags.get("trial_number", len(records) + 1)),
                "variant": tags.get("variant", ""),
                "trial_id": tags.get("trial_id"),
                "config_hash": tags.get("config_hash"),
                **({"seed": int(tags["seed"])} if "seed" in tags else {}),
                **({"group": tags["group"]} if "group" in tags else {}),
                **({"worker": tags["worker"]} if "worker" in tags else {}),
                "status": run.info.status,
                **{k: _typed(v) for k, v in run.data.params.items()},
                **{
                    k: v
                    for k, v in run.data.metrics.items()
                    if k in METRIC_KEYS or k.startswith("attention_")
                },
                "run_id": run.info.run_id,
                "seconds": round(((run.info.end_time or 0) - run.info.start_time) / 1000, 2),
                **({"error": tags["error"]} if "error" in tags else {}),
            }
        )
    return records


def per_trial(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: finished seeds averaged (metrics), counted (`seeds`),
    their spread kept (`*_std`); the first seed's run id stands for the trial."""
    finished = trials[trials["status"] == "FINISHED"]
    if finished.empty:
        return finished
    metric_cols = [
        c
        for c in finished
        if (c in METRIC_KEYS or c.startswith("attention_"))
        and pd.api.types.is_numeric_dtype(finished[c])
    ]
    grouped = finished.groupby("trial", sort=True)
    table = grouped.first()
    table[metric_cols] = grouped[metric_cols].mean()
    for col in METRIC_KEYS:
        if col in finished:
            table[f"{col}_std"] = grouped[col].std(ddof=1)
    table["seeds"] = grouped.size()
    if "seconds" in finished:
        table["seconds"] = grouped["seconds"].sum()
    return table.reset_index()
