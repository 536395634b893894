"""Tracking: the only package that talks to MLflow.

- `schema`: every tag, metric, param and artifact name the pipeline writes.
- `records`: typed records readers get (`SearchRun`, `TrialRun`, `TrialRecord`).
- `store`: `Tracker` and `open_tracker`, made of `connection`, `runs`, `readers` and
  `artifacts` (each imports MLflow); `protocol`: the contract a store meets.
- `mlflow_server`: an `mlflow server` over the store; `ui`: the MLflow UI in a browser.
- `redact` (from `pipeline.runtime.redaction`): credentials never logged.

`from pipeline.tracking import open_tracker` loads MLflow only when asked for.
"""

from __future__ import annotations

from typing import Any

from pipeline.runtime.redaction import redact
from pipeline.tracking.records import Predictions, SearchRun, TrialRecord, TrialRun
from pipeline.tracking.schema import Artifact, Kind, Metric, Status, Tag

__all__ = [
    "Artifact",
    "Kind",
    "Metric",
    "Predictions",
    "SearchRun",
    "Status",
    "Tag",
    "Tracker",
    "TrackingError",
    "TrialRecord",
    "TrialRun",
    "open_tracker",
    "redact",
]


def __getattr__(name: str) -> Any:
    if name in ("Tracker", "TrackingError", "open_tracker"):
        from pipeline.tracking import store

        return getattr(store, name)
    raise AttributeError(f"module 'pipeline.tracking' has no attribute {name!r}")
