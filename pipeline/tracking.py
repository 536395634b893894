"""The one MLflow wrapper: store set-up, parent/child runs, redaction, artifacts.

Every run this module opens is closed with a final status, whatever happens:
FINISHED, FAILED (an exception, with the error as a tag) or KILLED (Ctrl-C).
Nothing else in the project talks to MLflow directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT
from pipeline.errors import UserFacingError, one_line

TRACKED_PACKAGES = ("tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")
MAX_PARAM_CHARS = 6000

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<k>token|password|passwd|secret|api[_-]?key|access[_-]?key)=[^&\s]+"
)


class TrackingError(UserFacingError, RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


def redact(value: Any) -> str:
    """Hide `user:password@` in URIs and token-like query values."""
    text = str(value)
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(r"\g<k>=***", text)


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

    def __init__(self, uri: str, experiment: str, artifact_root: str, connect_timeout: int = 10):
        self.uri = uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self.connect_timeout = connect_timeout
        self.experiment_id: str | None = None
        self._datasets: dict[tuple[str, str], Any] = {}
        # A cluster worker has no parent run of its own: its trials nest under this one.
        self.parent_run_id: str | None = None

    @classmethod
    def from_config(cls, tracking) -> Tracker:
        return cls(
            tracking.uri, tracking.experiment, tracking.artifact_root, tracking.connect_timeout
        )

    # ------------------------------------------------------------ set-up
    def connect(self) -> None:
        """Point MLflow at the store and make sure it answers, before any training."""
        if self.uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.connect_timeout))
            self._check_server()
            artifact_location = None
        else:
            artifact_location = self._prepare_local_store()
        mlflow.set_tracking_uri(self.uri)
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
        mlflow.set_experiment(experiment_id=self.experiment_id)

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

    def _prepare_local_store(self) -> str:
        artifacts = Path(self.artifact_root).expanduser().resolve()
        paths = [artifacts]
        if self.uri.startswith("sqlite:///"):
            paths.append(Path(self.uri.removeprefix("sqlite:///")).expanduser().resolve().parent)
        for path in paths:
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test", delete=True)
                probe.close()
            except OSError as err:
                raise TrackingError(f"tracking: cannot write to {path} ({err.strerror})") from None
        return artifacts.as_uri()

    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {redact(self.uri)} --host 127.0.0.1 --port 5000"

    # ------------------------------------------------------------ runs
    @contextmanager
    def run(
        self,
        name: str,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
        run_id: str | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """A run that always ends with a status: FINISHED, FAILED (+error tag) or KILLED.

        With `run_id`, an existing run is reopened (a resumed search's parent).
        """
        remote_parent = nested and mlflow.active_run() is None and self.parent_run_id
        active = mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=self.experiment_id,
            nested=nested,
            parent_run_id=self.parent_run_id if remote_parent else None,
            tags={k: redact(v) for k, v in (tags or {}).items()},
        )
        try:
            yield active
        except KeyboardInterrupt:
            mlflow.set_tags({"status": "killed", "interrupted": "true"})
            mlflow.end_run(status="KILLED")
            raise
        except BaseException as err:
            mlflow.set_tags(
                {"status": "failed", "error": redact(f"{type(err).__name__}: {one_line(err)}")}
            )
            mlflow.end_run(status="FAILED")
            raise
        else:
            mlflow.set_tag("status", "finished")
            mlflow.end_run(status="FINISHED")

    # ------------------------------------------------------------ search ledger
    def _runs(self, filter_string: str, order_by: list[str] | None = None):
        return client().search_runs(
            [self.experiment_id],
            filter_string=filter_string,
            max_results=5000,
            order_by=order_by or ["attributes.start_time DESC"],
        )

    def find_search(self, name: str | None):
        """The latest live parent run of search `name` (found by tag), or of any search."""
        runs = [
            r for r in self.live_searches() if name is None or r.data.tags.get("search_id") == name
        ]
        return runs[0] if runs else None

    def live_searches(self):
        """Parent runs of every search not superseded by a restart (newest first)."""
        return [
            r for r in self._runs("tags.kind = 'search'") if r.data.tags.get("superseded") != "true"
        ]

    def children(self, parent_id: str):
        return self._runs(
            f"tags.mlflow.parentRunId = '{parent_id}'", order_by=["attributes.start_time ASC"]
        )

    def close_interrupted(self, parent_id: str, worker: str | None = None) -> int:
        """Children a dead process (or one cluster worker) left RUNNING become FAILED,
        tagged interrupted."""
        closed = 0
        for run in self.children(parent_id):
            if run.info.status == "RUNNING" and (
                worker is None or run.data.tags.get("worker") == worker
            ):
                c = client()
                c.set_tag(run.info.run_id, "interrupted", "true")
                c.set_tag(run.info.run_id, "status", "failed")
                c.set_tag(run.info.run_id, "error", "interrupted: the process died mid-trial")
                c.set_terminated(run.info.run_id, status="FAILED")
                closed += 1
        return closed

    @staticmethod
    def get_run(run_id: str):
        """A run by id, or TrackingError naming the id (wrong id, other store)."""
        try:
            return client().get_run(run_id)
        except Exception as err:
            raise TrackingError(
                f"run {run_id}: not found in this store ({one_line(err)})"
            ) from None

    @staticmethod
    def read_artifact(run_id: str, path: str) -> str:
        """The text of one logged artifact, or TrackingError naming it."""
        import mlflow.artifacts

        try:
            return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
        except Exception as err:
            raise TrackingError(
                f"run {run_id}: cannot read artifact '{path}' ({one_line(err)})"
            ) from None

    def runs_frame(self, filter_string: str):
        """Runs of this experiment as a pandas DataFrame (`mlflow.search_runs`)."""
        return mlflow.search_runs(
            experiment_ids=[self.experiment_id],
            filter_string=filter_string,
            max_results=50000,
            output_format="pandas",
        )

    @staticmethod
    def log_artifacts_to(run_id: str, folder: str, artifact_path: str) -> None:
        """Attach a folder to an existing (finished) run, e.g. a report to its search."""
        client().log_artifacts(run_id, folder, artifact_path)

    @staticmethod
    def set_run_tag(run_id: str, key: str, value: str) -> None:
        client().set_tag(run_id, key, redact(value))

    # ------------------------------------------------------------ logging
    @staticmethod
    def log_params(params: Mapping[str, Any]) -> None:
        mlflow.log_params({k: redact(v)[:MAX_PARAM_CHARS] for k, v in params.items()})

    @staticmethod
    def set_tags(tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: redact(v) for k, v in tags.items()})

    @staticmethod
    def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if clean:
            mlflow.log_metrics(clean, step=step)

    @staticmethod
    def log_dict(data: Any, artifact_file: str) -> None:
        mlflow.log_dict(data, artifact_file)

    @staticmethod
    def log_text(text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    @staticmethod
    def log_figure(figure, artifact_file: str) -> None:
        """Log and close a matplotlib figure (closing keeps memory flat over trials)."""
        import matplotlib.pyplot as plt

        try:
            mlflow.log_figure(figure, artifact_file)
        finally:
            plt.close(figure)

    @staticmethod
    def log_table_csv(frame, artifact_file: str) -> None:
        mlflow.log_text(frame.to_csv(index=False), artifact_file)

    def log_dataset(
        self, features, targets, name: str, context: str, source: str, digest: str
    ) -> None:
        """Log a split as an MLflow dataset input; built once per digest (schema and
        profile are computed over the whole array), then only linked to each run."""
        import mlflow.data

        key = (name, digest)
        if key not in self._datasets:
            self._datasets[key] = mlflow.data.from_numpy(
                features, targets=targets, name=name, source=redact(source), digest=digest[:36]
            )
        mlflow.log_input(self._datasets[key], context=context)

    @staticmethod
    def log_keras_model(model, input_example) -> None:
        """Log a loadable Keras model with signature and input example under `model/`.

        mlflow.keras.log_model writes the input example before it creates its folder
        (MLflow 3.17), so the model is saved to a folder made here and logged as run
        artifacts; `runs:/<id>/model` loads with mlflow.keras/pyfunc as usual.
        """
        import mlflow.keras
        from mlflow.models import infer_signature

        preds = model.predict(input_example, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            path.mkdir()
            mlflow.keras.save_model(
                model,
                str(path),
                signature=infer_signature(input_example, preds),
                input_example=input_example,
                pip_requirements=model_pip_requirements(),
            )
            mlflow.log_artifacts(str(path), "model")

    @staticmethod
    def log_environment() -> dict[str, str]:
        versions = package_versions()
        mlflow.log_dict(versions, "environment.json")
        tags = {f"version.{k}": v for k, v in versions.items()}
        tags.update(machine_tags())
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        mlflow.set_tags(tags)
        return versions


def machine_tags() -> dict[str, str]:
    """Where a search ran (reports quote it next to their numbers)."""
    import platform

    return {
        "machine.platform": platform.platform(),
        "machine.cpus": str(os.cpu_count()),
        "machine.python": platform.python_version(),
    }


def client() -> MlflowClient:
    return MlflowClient()
