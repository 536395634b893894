"""Shared fixtures. TensorFlow start-up noise is silenced before any test imports it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AIRLINE_CSV = PROJECT_ROOT.parent / "shared" / "data" / "airline_tweets.csv"

needs_airline = pytest.mark.skipif(
    not AIRLINE_CSV.exists(),
    reason=f"shared dataset absent: {AIRLINE_CSV} (see ../shared/data/README.md)",
)


def store_overrides(tmp_path) -> list[str]:
    """Overrides that keep everything a CLI run writes inside `tmp_path`."""
    return [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
        f"tuner.directory={tmp_path}/tuner",
        f"hydra.run.dir={tmp_path}/hydra",
    ]


@pytest.fixture
def run_cli(tmp_path):
    """Run `python -m pipeline.<module>` in a subprocess from the project root."""
    import subprocess

    def run(module: str, *args: str, timeout: int = 600, env: dict | None = None):
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", f"pipeline.{module}", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run
