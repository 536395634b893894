"""Tracking: the only package that talks to MLflow.

- `schema`: every tag, metric, param and artifact name the pipeline writes.
- `records`: typed records readers get (`SearchRun`, `TrialRun`, `TrialRecord`).
- `store`: `Tracker`, run lifecycle, logging, readers (imports MLflow).
- `mlflow_server`: an `mlflow server` over the store; `ui`: the MLflow UI in a browser.
- `redaction`: credentials never logged.

`from pipeline.tracking import Tracker` loads MLflow only when asked for.
"""

from __future__ import annotations

from typing import Any

from pipeline.tracking.records import Predictions, SearchRun, TrialRecord, TrialRun
from pipeline.tracking.redaction import redact
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
    "redact",
]


def __getattr__(name: str) -> Any:
    if name in ("Tracker", "TrackingError"):
        from pipeline.tracking import store

        return getattr(store, name)
    raise AttributeError(f"module 'pipeline.tracking' has no attribute {name!r}")
