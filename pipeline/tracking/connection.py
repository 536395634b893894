"""Where the store is and whether it answers: the connection part of `Tracker`.

One job: point MLflow at a SQLite file, a PostgreSQL database or a tracking server,
check it answers (and accepts the credentials) before any training, open the
experiment, and route every call through the outage guard. Also the store-level
helpers (`client`, `creation_lock`, `initialise_store`) every other part uses.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipeline import progress
from pipeline.errors import UserFacingError, one_line
from pipeline.runtime.redaction import redact
from pipeline.tracking import postgres, sqlite_store
from pipeline.tracking.outage import STORE_PROBE, auth_headers


class TrackingError(UserFacingError, RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


class CorruptArtifact(TrackingError):
    """A logged artifact is there but cannot be read (truncated, not what it claims)."""


class StoreConnection:
    """Set-up of one store and experiment (state: `uri`, `experiment_name`,
    `experiment_id`, `artifact_root`, `connect_timeout`, `guard`; set by `Tracker`)."""

    def _call(self, fn, *args, **kwargs):
        """Every write and read of the store: retried across an outage (see `outage`)."""
        return self.guard.call(fn, *args, **kwargs)

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
        request = urllib.request.Request(self.uri.rstrip("/") + STORE_PROBE, headers=auth_headers())
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
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


def not_found(err: BaseException) -> bool:
    """MLflow's "no such run/artifact" (a wrong id, another store), not an outage or a
    refused permission."""
    code = getattr(err, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
        or "not found" in str(err).lower()
    )


_FORBIDDEN = re.compile(r"\b403\b.*(Forbidden|!= 200)|PERMISSION_DENIED|Permission denied")


def refused_permission(err: BaseException) -> bool:
    """HTTP 403 from a server with basic auth: the signed-in user lacks a permission
    (MLflow's REST client and its artifact proxy word it differently)."""
    response = getattr(err, "response", None)
    if getattr(response, "status_code", None) == 403:
        return True
    return getattr(err, "error_code", "") == "PERMISSION_DENIED" or bool(
        _FORBIDDEN.search(str(err))
    )


def write_refused(uri: str, experiment: str) -> str:
    """The one line for a write the server refused (a READ user's search or report)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no user)"
    return (
        f"tracking server {redact(uri)}: user '{user}' may not write to experiment "
        f"'{experiment}' (HTTP 403); ask its admin for EDIT permission on it"
    )


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
