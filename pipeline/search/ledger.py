"""The search ledger: which search a run continues, and what it already did.

Reads the tracking store (typed `SearchRun`/`TrialRun` records) to decide whether a
command starts a new search or continues one (same `search.name`, or `search.resume`),
refuses to continue a search whose results would not be comparable, and rebuilds the
rows of trials a resumed search already ran. No TensorFlow here, so these checks
answer fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import config_hash, search_space_dims, to_plain
from pipeline.errors import SearchError
from pipeline.search import ownership
from pipeline.search.outcome import trial_row
from pipeline.tracking import Status, Tag


def plan_search_name(cfg: DictConfig, tracker, hold: bool = True) -> str:
    """The name this run will use: the given one, the latest (with resume), or a new one
    no other search has; `hold`: this process holds its lock (`ownership.py`) from now on,
    or refuses in one line when another live process does."""
    directory = cfg.tuner.directory
    if cfg.search.name or cfg.search.resume:
        name = cfg.search.name
        if not name:
            latest = tracker.find_search(None)
            if latest is None:
                raise SearchError(
                    f"search.resume: no earlier search in experiment "
                    f"'{tracker.experiment_name}' of {tracker.uri}"
                )
            name = latest.name
        if hold:
            ownership.hold(directory, name)
        return name
    if not hold:
        return search_name(cfg)
    return ownership.hold_new_name(
        directory, search_name(cfg), lambda name: tracker.find_search(name) is not None
    )


def search_name(cfg: DictConfig) -> str:
    return cfg.search.name or datetime.now().strftime("search-%Y%m%d-%H%M%S")


def comparable_hash(cfg: DictConfig, fingerprint: str, vectors: list | None = None) -> str:
    """What must not change when a search is resumed (max_trials may grow); `vectors`
    (the search's `VectorTable`s) cover the contents of a vector file, not just its path."""
    tuner = {
        k: v
        for k, v in to_plain(cfg.tuner).items()
        if k not in ("max_trials", "directory", "max_consecutive_failed_trials") and v is not None
    }
    return config_hash(
        {
            "space": search_space_dims(cfg.search_space),
            "model": to_plain(cfg.model),
            "train": to_plain(cfg.train),
            "tuner": tuner,
            "data": fingerprint,
            "seeds": to_plain(cfg.search).get("seeds"),
            "vary_split": bool(cfg.search.vary_split),
            # absent without vectors, so searches logged before them keep their hash
            **({"vectors": sorted(t.fingerprint for t in vectors)} if vectors else {}),
        }
    )


@dataclass
class SearchPlan:
    name: str
    parent_id: str | None  # an existing parent run to continue, or None for a new search

    @property
    def resuming(self) -> bool:
        return self.parent_id is not None

    def close_interrupted(self, tracker) -> None:
        """On resume, close the trial runs a killed search left RUNNING (FAILED +
        `interrupted`), so the ledger is clean before keras-tuner re-runs those trials."""
        if self.parent_id is None:
            return
        closed = tracker.close_interrupted(self.parent_id)
        if closed:
            progress.say(
                f"resuming '{self.name}': {closed} interrupted trial run(s) marked FAILED; "
                "keras-tuner re-runs them once"
            )

    def opening_line(self, cfg: DictConfig, parent_id: str) -> str:
        """The first progress line of a search, the same for one process and a cluster."""
        return (
            f"search '{self.name}' ({'resumed' if self.resuming else 'new'}): "
            f"tuner={cfg.tuner.kind} objective={cfg.tuner.objective} "
            f"max_trials={cfg.tuner.max_trials}  parent run {parent_id}"
        )


def plan_search(cfg: DictConfig, tracker, comparable: str) -> SearchPlan:
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
    name = existing.name
    if existing.comparable_hash != comparable:
        if not cfg.search.force_new:
            raise SearchError(
                f"search '{name}' exists with a different search space, data or training "
                "config, so its results would not be comparable; pick another search.name, "
                "or add search.force_new=true to start it again from scratch"
            )
        tracker.set_run_tag(existing.run_id, Tag.SUPERSEDED, "true")
        return SearchPlan(name, None)
    if cfg.search.force_new:
        tracker.set_run_tag(existing.run_id, Tag.SUPERSEDED, "true")
        return SearchPlan(name, None)
    return SearchPlan(name, existing.run_id)


def previous_rows(tracker, parent_id: str) -> list[dict[str, Any]]:
    """Summary rows of the trials a search already ran (interrupted ones are re-run, so
    left out)."""
    return [
        trial_row(run)
        for run in tracker.trial_runs(parent_id)
        if not run.interrupted and run.status in (Status.FINISHED, Status.FAILED)
    ]
