"""The contract a tracking store meets: what the rest of the pipeline may call.

Optuna's `BaseStorage`, for MLflow runs. `Tracker` (store.py) meets it over every
backend MLflow offers here (a SQLite file, PostgreSQL, a tracking server), and
tests/test_store_contract.py runs one suite against all three. Code outside
`pipeline.tracking` types its tracker as `TrackingStore` and gets one from
`open_tracker(cfg.tracking)`; a second implementation (another tracking service)
would implement exactly these methods and the names of `schema.py`.

Light: no MLflow import (the contract is read by type checkers and tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pipeline.tracking.records import Predictions, SearchRun, TrialRecord, TrialRun


@runtime_checkable
class TrackingStore(Protocol):
    """One store and experiment. Every run opened with `run` ends with a status
    (FINISHED, FAILED with an `error` tag, KILLED on Ctrl-C); reads return the typed
    records of `records.py`; calls ride out an outage within the configured budget."""

    uri: str
    experiment_name: str
    experiment_id: str | None

    # -- set-up
    def connect(self) -> None:
        """Check the store answers and open the experiment, before any training."""

    def ui_command(self) -> str:
        """How a user looks at this experiment in MLflow's UI."""

    def nest_under(self, parent_run_id: str | None) -> None:
        """Open trials under another process's parent run (cluster workers)."""

    def use_experiment(self, experiment_id: str) -> None:
        """Log into this experiment instead of the configured one."""

    # -- runs and what is logged on the active one
    def run(
        self,
        name: str,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
        run_id: str | None = None,
        system_metrics: bool = False,
    ) -> AbstractContextManager[Any]:
        """A run (new, or reopened by `run_id`) that always ends with a status."""

    def active_run_id(self) -> str:
        """The innermost run open in this thread."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def set_run_tag(self, run_id: str, key: str, value: str) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics on the active run, in order, also across an outage."""

    def flush_metrics(self, wait: bool = True) -> None: ...

    def close_interrupted(self, parent_id: str, worker: str | None = None) -> int:
        """Children a dead process left RUNNING become FAILED (tagged interrupted)."""

    def close_stale(self) -> int:
        """Runs RUNNING without a heartbeat for too long become FAILED (tagged stale)."""

    # -- reads
    def live_searches(self) -> list[SearchRun]: ...

    def find_search(self, name: str | None) -> SearchRun | None: ...

    def trial_runs(
        self,
        parent_ids: str | list[str],
        status: str | None = None,
        kind: str = ...,
        ended_since_ms: int | None = None,
    ) -> list[TrialRun]:
        """Children of these searches, oldest first; incremental with `ended_since_ms`."""

    def finished_replicate(self, parent_id: str, config_hash: str) -> TrialRun | None: ...

    def metric_history(self, run_id: str, key: str) -> dict[int, float]: ...

    def get_trial_run(self, run_id: str) -> TrialRun: ...

    def read_text(self, run_id: str, path: str) -> str: ...

    def read_trial_record(self, run_id: str) -> TrialRecord: ...

    def read_predictions(self, run_id: str) -> Predictions | None:
        """None only when the run logged none; an unreadable file raises."""

    def download_artifact(self, run_id: str, path: str, folder: str) -> str: ...

    # -- artifacts, datasets, models
    def log_dict(self, data: Any, artifact_file: str) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...

    def log_table(self, frame: Any, artifact_file: str) -> None: ...

    def log_table_csv(self, frame: Any, artifact_file: str) -> None: ...

    def log_trial_record(self, record: TrialRecord) -> None: ...

    def log_predictions(self, predictions: Predictions) -> None: ...

    def log_dataset(
        self, features: Any, targets: Any, name: str, context: str, source: str, digest: str
    ) -> None: ...

    def save_keras_model(self, model: Any, path: Path) -> Path: ...

    def log_artifacts_to(self, run_id: str, folder: str, artifact_path: str) -> None: ...

    def register_model(self, name: str, run_id: str, tags: Mapping[str, Any]) -> str: ...

    def log_environment(self) -> dict[str, str]: ...
