"""The one MLflow wrapper: `Tracker`, made of one part per job, behind `TrackingStore`.

- `connection.StoreConnection`: where the store is, whether it answers, the experiment;
- `runs.RunLifecycle`: runs that always end with a status, metrics, params, tags;
- `readers.StoreReaders`: typed reads (`SearchRun`, `TrialRun`, artifacts);
- `artifacts.ArtifactLog`: files, datasets, models, the registry, the environment.

`open_tracker(cfg.tracking)` is how the pipeline gets one; `protocol.TrackingStore` is
the contract every store (SQLite, PostgreSQL, a tracking server) meets, tested once for
all of them (tests/test_store_contract.py). Nothing outside `pipeline.tracking` imports
MLflow; readers get the records of `records.py`, with names from `schema.py`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pipeline.tracking.artifacts import (
    ArtifactLog,
    git_commit,
    machine_tags,
    model_pip_requirements,
    package_versions,
)
from pipeline.tracking.connection import (
    CorruptArtifact,
    StoreConnection,
    TrackingError,
    check_artifact_uri,
    client,
    creation_lock,
    has_scheme,
    initialise_store,
)
from pipeline.tracking.heartbeat import Heartbeat
from pipeline.tracking.outage import OutageGuard
from pipeline.tracking.readers import StoreReaders
from pipeline.tracking.runs import RunLifecycle

__all__ = [
    "CorruptArtifact",
    "Tracker",
    "TrackingError",
    "check_artifact_uri",
    "client",
    "creation_lock",
    "git_commit",
    "has_scheme",
    "initialise_store",
    "machine_tags",
    "model_pip_requirements",
    "open_tracker",
    "package_versions",
]


class Tracker(StoreConnection, RunLifecycle, StoreReaders, ArtifactLog):
    """A connection to one tracking store and experiment: the state every part reads."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: str,
        connect_timeout: int = 10,
        *,
        outage_budget_s: float = 0,
        outage_backoff_max_s: float = 10.0,
        heartbeat_s: float = 0,
        stale_after_s: float = 0,
        system_metrics_s: float = 0,
    ):
        """Budgets of 0 switch a feature off (direct use); the config sets them all."""
        self.uri = uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self.connect_timeout = connect_timeout
        self.experiment_id: str | None = None
        self._datasets: dict[tuple[str, str], Any] = {}
        # A cluster worker has no parent run of its own: its trials nest under this one.
        self.parent_run_id: str | None = None
        self.guard = OutageGuard(uri, outage_budget_s, outage_backoff_max_s)
        self.heartbeat = Heartbeat(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self.system_metrics_s = float(system_metrics_s)
        # Metrics logged while the server is unreachable, replayed in order: training
        # goes on during an outage instead of waiting at every epoch's log call.
        self._pending_metrics: deque[tuple[str, list]] = deque()
        self._last_flush_try = 0.0
        # MLflow's system-metrics monitors, started once a run has logged its own metrics:
        # the compare page plots a run's first-logged metric by default, which should be
        # the objective (see MetricsLogger), not `system/cpu_utilization_percentage`.
        self._monitors_wanted: set[str] = set()
        self._monitors: dict[str, Any] = {}

    @classmethod
    def from_config(cls, tracking) -> Tracker:
        return cls(
            tracking.uri,
            tracking.experiment,
            tracking.artifact_root,
            tracking.connect_timeout,
            outage_budget_s=tracking.outage_budget_s,
            outage_backoff_max_s=tracking.outage_backoff_max_s,
            heartbeat_s=tracking.heartbeat_s,
            stale_after_s=tracking.stale_after_s,
            system_metrics_s=tracking.system_metrics_s,
        )

    def nest_under(self, parent_run_id: str | None) -> None:
        """Trials this process opens nest under another process's parent run (a cluster
        worker's trials under the chief's search)."""
        self.parent_run_id = parent_run_id

    def use_experiment(self, experiment_id: str) -> None:
        """Log into this experiment (a reproduction beside the run it retrains)."""
        self.experiment_id = experiment_id


def open_tracker(tracking, *, parent_run_id: str | None = None) -> Tracker:
    """The tracker of a `tracking` config section, connected (its store checked, the
    experiment open): what every command uses."""
    tracker = Tracker.from_config(tracking)
    tracker.nest_under(parent_run_id)
    tracker.connect()
    return tracker
