"""The one MLflow wrapper: store set-up, parent/child runs, logging, typed readers.

Every run this module opens is closed with a final status, whatever happens:
FINISHED, FAILED (an exception, with the error as a tag) or KILLED (Ctrl-C).
Nothing outside `pipeline.tracking` imports MLflow; readers get the records of
`records.py`, with names from `schema.py`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from pipeline import progress
from pipeline.config import PROJECT_ROOT
from pipeline.errors import UserFacingError, one_line
from pipeline.tracking import postgres, sqlite_store
from pipeline.tracking.heartbeat import Heartbeat
from pipeline.tracking.outage import OutageGuard, TrackingOutage
from pipeline.tracking.records import Predictions, SearchRun, TrialRecord, TrialRun
from pipeline.tracking.redaction import redact
from pipeline.tracking.schema import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT,
    Artifact,
    Kind,
    Param,
    Status,
    Tag,
)

TRACKED_PACKAGES = ("tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")
MAX_PARAM_CHARS = 6000


class TrackingError(UserFacingError, RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


class CorruptArtifact(TrackingError):
    """A logged artifact is there but cannot be read (truncated, not what it claims)."""


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def model_pip_requirements() -> list[str]:
    """Pinned requirements for logged models (skips MLflow's slow inference)."""
    return [f"{n}=={v}" for n, v in package_versions().items() if n != "hydra-core"]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Tracker:
    """A connection to one tracking store and experiment."""

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

    def _call(self, fn, *args, **kwargs):
        """Every write and read of the store: retried across an outage (see `outage`)."""
        return self.guard.call(fn, *args, **kwargs)

    # ------------------------------------------------------------ set-up
    def connect(self) -> None:
        """Point MLflow at the store and make sure it answers, before any training."""
        if self.uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.connect_timeout))
            # Every set_terminated would print two "View run" lines (and read the run back);
            # the search prints its parent run and the UI command once.
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            self._check_server()
            artifact_location = None
        else:
            artifact_location = self._prepare_local_store()
        mlflow.set_tracking_uri(self.uri)
        with creation_lock(self.uri):  # the first opener of a fresh store creates it alone
            self._open_experiment(artifact_location)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        if self.stale_after_s > 0:
            closed = self.close_stale()
            if closed:
                progress.say(
                    f"tracking: closed {closed} stale run(s) as FAILED (RUNNING with no "
                    f"heartbeat for over {self.stale_after_s:.0f}s: tracking.stale_after_s)"
                )

    def _open_experiment(self, artifact_location: str | None) -> None:
        try:
            exp = mlflow.get_experiment_by_name(self.experiment_name)
            if exp is None:
                self.experiment_id = mlflow.create_experiment(
                    self.experiment_name,
                    artifact_location=artifact_location,
                    # Open the UI on the training-runs view, not the GenAI overview.
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
            else:
                if exp.lifecycle_stage == "deleted":
                    raise TrackingError(
                        f"tracking.experiment: '{self.experiment_name}' is deleted in "
                        f"{redact(self.uri)}; restore it or pick another name"
                    )
                self.experiment_id = exp.experiment_id
        except TrackingError:
            raise
        except Exception as err:  # MLflow raises many kinds; name the store and the cause
            raise TrackingError(
                f"tracking.uri: cannot use {redact(self.uri)}: {one_line(err)}"
            ) from None

    def _check_server(self) -> None:
        url = self.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.connect_timeout) as resp:
                resp.read(64)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"tracking.uri: cannot reach tracking server {redact(self.uri)} "
                f"within {self.connect_timeout}s ({reason})"
            ) from None
        self._check_credentials()

    def _check_credentials(self) -> None:
        """One authenticated read before any training: a server with basic auth
        (`pipeline.server --auth`) that refuses MLFLOW_TRACKING_USERNAME/PASSWORD fails the
        command here, in one line, instead of failing every trial."""
        url = self.uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        request = urllib.request.Request(url)
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
        try:
            with urllib.request.urlopen(request, timeout=self.connect_timeout) as resp:
                resp.read(64)
        except urllib.error.HTTPError as err:
            if err.code == 401:
                who = f"user '{user}'" if user and password else "no credentials"
                raise TrackingError(
                    f"tracking server {redact(self.uri)} refused {who} (HTTP 401): set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a valid account"
                ) from None
            if err.code == 403:
                raise TrackingError(
                    f"tracking server {redact(self.uri)}: user '{user}' may not read "
                    "experiments (HTTP 403); ask its admin for a permission"
                ) from None
        except (urllib.error.URLError, OSError):
            pass  # reachability was checked just before; MLflow's own calls report the rest

    def _prepare_local_store(self) -> str:
        if has_scheme(self.artifact_root):  # s3://, gs://, file://...: MLflow's to resolve
            check_artifact_uri(self.artifact_root)
            artifacts = None
            paths = []
        else:
            artifacts = Path(self.artifact_root).expanduser().resolve()
            paths = [artifacts]
        if (db_file := sqlite_store.sqlite_path(self.uri)) is not None:
            paths.append(db_file.parent)
        for path in paths:
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test", delete=True)
                probe.close()
            except OSError as err:
                raise TrackingError(f"tracking: cannot write to {path} ({err.strerror})") from None
        return self.artifact_root if artifacts is None else artifacts.as_uri()

    def ui_command(self) -> str:
        """How to look at this experiment: its runs in MLflow's model-training view
        (MLflow 3.17 opens in its GenAI view unless the URL asks)."""
        view = f"#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
        if self.guard.remote:
            return f"{redact(self.uri).rstrip('/')}/{view}"
        return (
            f"mlflow ui --backend-store-uri {redact(self.uri)} --host 127.0.0.1 --port 5000"
            f", then http://127.0.0.1:5000/{view}"
        )

    # ------------------------------------------------------------ runs
    @contextmanager
    def run(
        self,
        name: str,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
        run_id: str | None = None,
        system_metrics: bool = False,
    ) -> Iterator[mlflow.ActiveRun]:
        """A run that always ends with a status: FINISHED, FAILED (+error tag) or KILLED.

        With `run_id`, an existing run is reopened (a resumed search's parent). With
        `system_metrics`, MLflow samples CPU and memory every `system_metrics_s` seconds
        (its "System metrics" tab; a run shorter than that gets none).
        """
        sample = system_metrics and self.system_metrics_s > 0
        remote_parent = nested and mlflow.active_run() is None and self.parent_run_id
        tags = {k: redact(v) for k, v in (tags or {}).items()}
        tags[Tag.HEARTBEAT] = str(int(time.time()))
        active = self._call(
            mlflow.start_run,
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=self.experiment_id,
            nested=nested,
            parent_run_id=self.parent_run_id if remote_parent else None,
            tags=tags,
            log_system_metrics=False,  # started after the run's first metrics: see below
        )
        run_id = active.info.run_id
        self.heartbeat.watch(run_id)
        if sample:
            self._monitors_wanted.add(run_id)
        try:
            yield active
        except KeyboardInterrupt:
            self._end(run_id, Status.KILLED, {Tag.STATUS: "killed", Tag.INTERRUPTED: "true"})
            raise
        except BaseException as err:
            error = redact(f"{type(err).__name__}: {one_line(err)}")
            self._end(run_id, Status.FAILED, {Tag.STATUS: "failed", Tag.ERROR: error})
            raise
        else:
            self._end(run_id, Status.FINISHED, {Tag.STATUS: "finished"})
        finally:
            self.heartbeat.forget(run_id)
            self._monitors_wanted.discard(run_id)

    def _end(self, run_id: str, status: str, tags: dict[str, str]) -> None:
        """Flush buffered metrics, tag and terminate the run (retried across an outage),
        then leave MLflow's active-run stack. With the server lost for good, only leave the
        stack: the next search, report or resume closes the run (stale or interrupted)."""
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            # Swallowed on purpose: MLflow's sampler thread logging its last samples (it
            # fails during an outage); the run's own status still follows. Shown by
            # test_faults.py::test_an_outage_mid_trial_loses_nothing (every run FINISHED).
            with suppress(Exception):
                monitor.finish()
        try:
            if not self.guard.lost:
                self.flush_metrics()
                self._set_run_tags(run_id, tags)
                self._call(client().set_terminated, run_id, status)
        finally:
            # Swallowed on purpose: end_run pops MLflow's active-run stack first, then
            # terminates the run, which fails when the server is lost; the next command
            # closes that run (interrupted/stale). Shown by test_faults.py::
            # test_an_outage_beyond_the_budget_stops_cleanly_and_resumes (nothing RUNNING).
            with suppress(Exception):
                mlflow.end_run(status=status)

    # ------------------------------------------------------------ readers (typed records)
    def _search(self, filter_string: str, ascending: bool = False) -> list:
        """Every run of this experiment matching the filter (all pages)."""
        order = "ASC" if ascending else "DESC"
        runs, token = [], None
        while True:
            page = self._call(
                client().search_runs,
                [self.experiment_id],
                filter_string=filter_string,
                max_results=5000,
                order_by=[f"attributes.start_time {order}"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def live_searches(self) -> list[SearchRun]:
        """Parent runs of every search not superseded by a restart (newest first)."""
        runs = (_search_run(r) for r in self._search(f"tags.{Tag.KIND} = '{Kind.SEARCH}'"))
        return [r for r in runs if not r.superseded]

    def find_search(self, name: str | None) -> SearchRun | None:
        """The latest live parent run of search `name` (found by tag), or of any search."""
        runs = [r for r in self.live_searches() if name is None or r.name == name]
        return runs[0] if runs else None

    def trial_runs(
        self,
        parent_ids: str | list[str],
        status: str | None = None,
        kind: str = Kind.TRIAL,
        ended_since_ms: int | None = None,
    ) -> list[TrialRun]:
        """Trial runs (or other children: `kind=reference`) of these searches (parent run
        ids), oldest first; with `ended_since_ms`, only runs that ended at or after it (an
        incremental read: the pruning mirror asks only for what is new)."""
        wanted = {parent_ids} if isinstance(parent_ids, str) else set(parent_ids)
        query = f"tags.{Tag.KIND} = '{kind}'"
        if isinstance(parent_ids, str):
            query += f" and tags.{MLFLOW_PARENT} = '{parent_ids}'"
        if status:
            query += f" and attributes.status = '{status}'"
        if ended_since_ms is not None:
            query += f" and attributes.end_time >= {int(ended_since_ms)}"
        runs = (_trial_run(r) for r in self._search(query, ascending=True))
        return [r for r in runs if r.parent_id in wanted]

    def finished_replicate(self, parent_id: str, config_hash: str) -> TrialRun | None:
        """The latest FINISHED trial run of one replicate (tag `config_hash`) under a
        search's parent, or None: one filtered query, so a trial can ask before training."""
        query = (
            f"tags.{Tag.KIND} = '{Kind.TRIAL}' and tags.{MLFLOW_PARENT} = '{parent_id}' "
            f"and tags.{Tag.CONFIG_HASH} = '{config_hash}' "
            f"and attributes.status = '{Status.FINISHED}'"
        )
        runs = [_trial_run(r) for r in self._search(query)]
        return runs[0] if runs else None

    def metric_history(self, run_id: str, key: str) -> dict[int, float]:
        """A run's values of one metric by step (the per-epoch curves: step = epoch)."""
        return {m.step: m.value for m in self._call(client().get_metric_history, run_id, key)}

    def get_trial_run(self, run_id: str) -> TrialRun:
        """Any run by id, or TrackingError naming the id (wrong id, other store). An
        outage stays an outage (retried within the budget, then `TrackingOutage`)."""
        try:
            return _trial_run(self._call(client().get_run, run_id))
        except TrackingOutage:
            raise
        except mlflow.exceptions.MlflowException as err:
            what = "not found in this store" if _missing(err) else "cannot be read"
            raise TrackingError(f"run {run_id}: {what} ({one_line(err)})") from None

    def close_interrupted(self, parent_id: str, worker: str | None = None) -> int:
        """Children a dead process (or one cluster worker) left RUNNING become FAILED,
        tagged interrupted."""
        closed = 0
        for run in self.trial_runs(parent_id):
            if run.status == Status.RUNNING and (worker is None or run.worker == worker):
                self._close_failed(
                    run.run_id,
                    {
                        Tag.INTERRUPTED: "true",
                        Tag.ERROR: "interrupted: the process died mid-trial",
                    },
                )
                closed += 1
        return closed

    def close_stale(self) -> int:
        """Runs of this experiment RUNNING with no heartbeat for `stale_after_s` (their
        process died unseen: a killed machine, a lost worker) become FAILED, tagged stale.
        Optuna's `fail_stale_trials`, for MLflow runs; runs open in this process are alive."""
        now = time.time()
        closed = 0
        for run in self._search(f"attributes.status = '{Status.RUNNING}'"):
            run_id = run.info.run_id
            if self.heartbeat.watching(run_id):
                continue
            beat = _int(run.data.tags.get(Tag.HEARTBEAT)) or (run.info.start_time or 0) // 1000
            silent = now - beat
            if silent > self.stale_after_s:
                self._close_failed(
                    run_id,
                    {
                        Tag.STALE: "true",
                        Tag.ERROR: f"stale: no heartbeat for {silent:.0f}s; its process is gone",
                    },
                )
                closed += 1
        return closed

    def _close_failed(self, run_id: str, tags: dict[str, str]) -> None:
        c = client()
        self._set_run_tags(run_id, {Tag.STATUS: "failed", **tags})
        self._call(c.set_terminated, run_id, status=Status.FAILED)

    def _set_run_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, redact(v)) for k, v in tags.items()]
        self._call(client().log_batch, run_id, tags=batch)

    def read_text(self, run_id: str, path: str) -> str:
        """The text of one logged artifact, or TrackingError naming it."""
        import mlflow.artifacts

        try:
            return self._call(mlflow.artifacts.load_text, f"runs:/{run_id}/{path}")
        except TrackingOutage:
            raise
        except (mlflow.exceptions.MlflowException, OSError, UnicodeDecodeError) as err:
            raise TrackingError(
                f"run {run_id}: cannot read artifact '{path}' ({one_line(err)})"
            ) from None

    def read_trial_record(self, run_id: str) -> TrialRecord:
        return TrialRecord.from_json(json.loads(self.read_text(run_id, Artifact.TRIAL_RECORD)))

    def read_predictions(self, run_id: str) -> Predictions | None:
        """A trial's validation predictions, or None when it logged none (older runs,
        `tracking.log_predictions=false`). A file that is there but cannot be read raises
        `CorruptArtifact`; a refused permission or any other store error is a
        TrackingError, an outage `TrackingOutage`: never "no predictions"."""
        import zipfile

        import numpy as np

        folder, name = Artifact.PREDICTIONS.rsplit("/", 1)
        try:
            listed = self._call(client().list_artifacts, run_id, folder)
            if Artifact.PREDICTIONS not in {f.path for f in listed}:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                path = self._call(client().download_artifacts, run_id, Artifact.PREDICTIONS, tmp)
                try:
                    with np.load(path) as saved:
                        return Predictions(saved["index"], saved["y"], saved["probs"])
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                    raise CorruptArtifact(
                        f"run {run_id}: {Artifact.PREDICTIONS} is unreadable ({one_line(err)})"
                    ) from None
        except (TrackingOutage, CorruptArtifact):
            raise
        except mlflow.exceptions.MlflowException as err:
            raise TrackingError(
                f"run {run_id}: cannot read {Artifact.PREDICTIONS} ({one_line(err)})"
            ) from None

    def download_artifact(self, run_id: str, path: str, folder: str) -> str:
        return self._call(client().download_artifacts, run_id, path, folder)

    def log_artifacts_to(self, run_id: str, folder: str, artifact_path: str) -> None:
        """Attach a folder to an existing (finished) run, e.g. a report to its search."""
        self._call(client().log_artifacts, run_id, folder, artifact_path)

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        self._set_run_tags(run_id, {key: value})

    # ------------------------------------------------------------ logging (active run)
    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: redact(v)[:MAX_PARAM_CHARS] for k, v in params.items()}
        self._call(mlflow.log_params, clean)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call(mlflow.set_tags, {k: redact(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics on the active run. Against a server they are queued and sent in order:
        during an outage the queue grows and training goes on (`flush_metrics` before the
        run ends waits for the server, within the outage budget)."""
        from mlflow.entities import Metric as MetricEntity

        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if not clean:
            return
        run_id = mlflow.active_run().info.run_id
        if not self.guard.remote:
            mlflow.log_metrics(clean, step=step)
        else:
            now = int(time.time() * 1000)
            batch = [MetricEntity(k, v, now, step or 0) for k, v in clean.items()]
            self._pending_metrics.append((run_id, batch))
            self.flush_metrics(wait=False)
        if run_id in self._monitors_wanted:
            self._start_system_metrics(run_id)

    def _start_system_metrics(self, run_id: str) -> None:
        """MLflow's CPU/memory/disk/network sampler for this run (its System metrics tab);
        a run shorter than one interval after its first metrics gets no sample."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitors_wanted.discard(run_id)
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=self.system_metrics_s, tracking_uri=self.uri
        )
        monitor.start()
        self._monitors[run_id] = monitor

    def flush_metrics(self, wait: bool = True) -> None:
        """Send queued metrics in order; without `wait`, stop at the first outage error
        (and try at most every few seconds while the server is down)."""
        if not wait and self.guard.down and time.monotonic() - self._last_flush_try < 5:
            return
        c = client()
        while self._pending_metrics:
            run_id, batch = self._pending_metrics[0]
            if wait:
                self._call(c.log_batch, run_id, metrics=batch)
            else:
                self._last_flush_try = time.monotonic()
                sent, _ = self.guard.try_once(c.log_batch, run_id, metrics=batch)
                if not sent:
                    return
            self._pending_metrics.popleft()

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self._call(mlflow.log_dict, data, artifact_file)

    def log_trial_record(self, record: TrialRecord) -> None:
        """A trial's `trial.json` on the active run (the tuner and reproduce alike)."""
        self._call(mlflow.log_dict, record.to_json(), Artifact.TRIAL_RECORD)

    def log_predictions(self, predictions: Predictions) -> None:
        """Validation predictions on the active run, compressed (`predictions/val.npz`)."""
        import numpy as np

        folder, name = Artifact.PREDICTIONS.rsplit("/", 1)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            np.savez_compressed(
                path,
                index=predictions.index.astype("int64"),
                y=predictions.y.astype("int16"),
                probs=predictions.probs.astype("float32"),
            )
            self._call(mlflow.log_artifact, str(path), folder)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(mlflow.log_text, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        """Log and close a matplotlib figure (closing keeps memory flat over trials)."""
        import matplotlib.pyplot as plt

        try:
            self._call(mlflow.log_figure, figure, artifact_file)
        finally:
            plt.close(figure)

    def log_table_csv(self, frame, artifact_file: str) -> None:
        self._call(mlflow.log_text, frame.to_csv(index=False), artifact_file)

    def log_dataset(
        self, features, targets, name: str, context: str, source: str, digest: str
    ) -> None:
        """Log a split as an MLflow dataset input; built once per digest (schema and
        profile are computed over the whole array), then only linked to each run.

        Workers logging the same new dataset at once race in the store's unique key;
        the loser's dataset exists by then, so linking it again is all that is left."""
        import mlflow.data

        key = (name, digest)
        if key not in self._datasets:
            self._datasets[key] = mlflow.data.from_numpy(
                features, targets=targets, name=name, source=redact(source), digest=digest[:36]
            )
        try:
            self._call(mlflow.log_input, self._datasets[key], context=context)
        except TrackingOutage:
            raise
        except Exception as err:
            if not _already_exists(err):
                raise
            self._call(mlflow.log_input, self._datasets[key], context=context)

    @staticmethod
    def save_keras_model(model, path: Path) -> Path:
        """An MLflow Keras model folder at `path` (what the text-in model wraps, and what
        `mlflow.keras.load_model(".../model/artifacts/keras_model")` loads)."""
        import mlflow.keras

        mlflow.keras.save_model(model, str(path), pip_requirements=model_pip_requirements())
        return path

    def log_model_folder(self, folder: Path) -> None:
        """A saved MLflow model folder as the active run's `model/` artifacts (loadable as
        `runs:/<id>/model`; registered as the best trial's model)."""
        self._call(mlflow.log_artifacts, str(folder), Artifact.MODEL_DIR)

    def log_table(self, frame, artifact_file: str) -> None:
        """A DataFrame as an MLflow table artifact (rendered as a table in the UI)."""
        self._call(mlflow.log_table, data=frame, artifact_file=artifact_file)

    def register_model(self, name: str, run_id: str, tags: Mapping[str, Any]) -> str:
        """A new version of registered model `name` from a trial's logged `model/`;
        returns the version. `models:/NAME/latest` then loads it with mlflow.keras."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints two lines
                version = self._call(
                    mlflow.register_model,
                    f"runs:/{run_id}/{Artifact.MODEL_DIR}",
                    name,
                    tags={k: redact(v) for k, v in tags.items()},
                )
        except TrackingOutage:
            raise
        except Exception as err:
            raise TrackingError(
                f"tracking.register_best: cannot register run {run_id}'s model as '{name}' "
                f"({one_line(err)})"
            ) from None
        return str(version.version)

    def log_environment(self) -> dict[str, str]:
        versions = package_versions()
        self._call(mlflow.log_dict, versions, Artifact.ENVIRONMENT)
        tags = {f"{Tag.VERSION_PREFIX}{k}": v for k, v in versions.items()}
        tags.update(machine_tags())
        commit = git_commit()
        if commit:
            tags[MLFLOW_GIT_COMMIT] = commit
        self._call(mlflow.set_tags, tags)
        return versions


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def has_scheme(location: str) -> bool:
    """A URI (`s3://bucket/x`, `file:///srv/a`), which goes to MLflow untouched; anything
    else is a local path, resolved here."""
    return bool(_SCHEME.match(location))


def check_artifact_uri(uri: str) -> None:
    """An artifact root MLflow must reach through its own repository for the scheme: an
    unknown scheme, a missing client library (boto3 for s3://) or an unreachable store
    fails here in one line, before any training."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(uri).list_artifacts()
    except Exception as err:  # re-raised: MLflow's many kinds, named with the location
        hint = (
            "; install the client library for this scheme" if isinstance(err, ImportError) else ""
        )
        raise TrackingError(
            f"tracking.artifact_root: cannot use {redact(uri)}: {one_line(err)}{hint}"
        ) from None


def _missing(err: BaseException) -> bool:
    """MLflow's "no such run/artifact" (a wrong id, another store), not an outage or a
    refused permission."""
    code = getattr(err, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
        or "not found" in str(err).lower()
    )


def _already_exists(err: BaseException) -> bool:
    """A unique-key clash in the store (SQLite, PostgreSQL, MySQL wording)."""
    marks = ("UNIQUE constraint failed", "IntegrityError", "duplicate key", "Duplicate entry")
    return any(mark in str(err) for mark in marks)


def machine_tags() -> dict[str, str]:
    """Where a search ran (reports quote it next to their numbers)."""
    import platform

    return {
        f"{Tag.MACHINE_PREFIX}platform": platform.platform(),
        f"{Tag.MACHINE_PREFIX}cpus": str(os.cpu_count()),
        f"{Tag.MACHINE_PREFIX}python": platform.python_version(),
    }


def creation_lock(uri: str):
    """One process at a time creates or migrates MLflow's schema: a file lock beside a
    SQLite store, an advisory lock in a PostgreSQL one (no-op for a server)."""
    if postgres.is_postgres(uri):
        return postgres.creation_lock(uri)
    return sqlite_store.creation_lock(uri)


def initialise_store(uri: str) -> None:
    """Create or migrate a database store now, under the creation lock (a server started
    on a fresh SQLite store would otherwise migrate it while searches open it too)."""
    try:
        with creation_lock(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except UserFacingError:
        raise
    except Exception as err:
        raise TrackingError(f"tracking.uri: cannot use {redact(uri)}: {one_line(err)}") from None


def client() -> MlflowClient:
    return MlflowClient()


def _prefixed(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _param(run, name: str) -> str | None:
    value = run.data.params.get(name)
    return None if value in (None, "", "None") else value


def _search_run(run) -> SearchRun:
    tags = run.data.tags
    return SearchRun(
        run_id=run.info.run_id,
        name=tags.get(Tag.SEARCH_ID, run.info.run_name),
        status=run.info.status,
        start_time=run.info.start_time,
        comparable_hash=tags.get(Tag.COMPARABLE_HASH),
        objective=tags.get(Tag.OBJECTIVE),
        command=tags.get(Tag.COMMAND),
        superseded=tags.get(Tag.SUPERSEDED) == "true",
        best_run_id=tags.get(Tag.BEST_RUN_ID),
        baseline=_param(run, Param.BASELINE),
        vary_split=_param(run, Param.VARY_SPLIT) == "True",
        versions=_prefixed(tags, Tag.VERSION_PREFIX),
        machine=_prefixed(tags, Tag.MACHINE_PREFIX),
        git_commit=tags.get(MLFLOW_GIT_COMMIT),
    )


def _trial_run(run) -> TrialRun:
    tags = run.data.tags
    return TrialRun(
        run_id=run.info.run_id,
        name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        parent_id=tags.get(MLFLOW_PARENT),
        kind=tags.get(Tag.KIND),
        search_id=tags.get(Tag.SEARCH_ID),
        trial_id=tags.get(Tag.TRIAL_ID),
        trial_number=_int(tags.get(Tag.TRIAL_NUMBER)),
        config_hash=tags.get(Tag.CONFIG_HASH),
        group=tags.get(Tag.GROUP),
        seed=_int(tags.get(Tag.SEED)),
        variant=tags.get(Tag.VARIANT),
        data=tags.get(Tag.DATA),
        data_fingerprint=tags.get(Tag.DATA_FINGERPRINT),
        worker=tags.get(Tag.WORKER),
        interrupted=tags.get(Tag.INTERRUPTED) == "true",
        pruned=tags.get(Tag.PRUNED) == "true",
        xla=tags.get(Tag.XLA) == "on",
        error=tags.get(Tag.ERROR),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        searched=tuple(tags[Tag.SEARCHED].split(",")) if Tag.SEARCHED in tags else None,
    )
