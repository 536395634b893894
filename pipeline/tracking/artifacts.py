"""Files, tables, datasets and models on runs, and the model registry: the artifacts
part of `Tracker` (with the environment a run records: package versions, machine, commit).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow

from pipeline.config import PROJECT_ROOT
from pipeline.errors import one_line
from pipeline.runtime.redaction import redact
from pipeline.tracking import connection
from pipeline.tracking.connection import TrackingError
from pipeline.tracking.outage import TrackingOutage
from pipeline.tracking.records import Predictions, TrialRecord
from pipeline.tracking.schema import MLFLOW_GIT_COMMIT, Artifact, Tag

TRACKED_PACKAGES = ("tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")


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


def machine_tags() -> dict[str, str]:
    """Where a search ran (reports quote it next to their numbers)."""
    import platform

    return {
        f"{Tag.MACHINE_PREFIX}platform": platform.platform(),
        f"{Tag.MACHINE_PREFIX}cpus": str(os.cpu_count()),
        f"{Tag.MACHINE_PREFIX}python": platform.python_version(),
    }


def _already_exists(err: BaseException) -> bool:
    """A unique-key clash in the store (SQLite, PostgreSQL, MySQL wording)."""
    marks = ("UNIQUE constraint failed", "IntegrityError", "duplicate key", "Duplicate entry")
    return any(mark in str(err) for mark in marks)


class ArtifactLog:
    """Artifacts on the active run (or a named one), datasets, models and their
    registration (state: the dataset cache `_datasets`; set by `Tracker`)."""

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

    def log_table(self, frame, artifact_file: str) -> None:
        """A DataFrame as an MLflow table artifact (rendered as a table in the UI)."""
        self._call(mlflow.log_table, data=frame, artifact_file=artifact_file)

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

    def log_artifacts_to(self, run_id: str, folder: str, artifact_path: str) -> None:
        """Attach a folder to an existing (finished) run, e.g. a report to its search."""
        self._call(connection.client().log_artifacts, run_id, folder, artifact_path)

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
