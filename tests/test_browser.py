"""The MLflow UI, in headless Chromium, shows a tiny real search and its attention heatmap.

A tiny real search with the CLI, then `mlflow server` on 127.0.0.1 over its store,
then Playwright driving Debian's chromium: the runs table must list the parent and
(expanded) its children, and a child's heatmap PNG must be served and rendered.
Screenshots are kept in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from pipeline.server import mlflow_server
from pipeline.ui_capture import capture, chromium_path
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (`make browser` installs it as root)"
)
def test_ui_lists_runs_and_serves_the_attention_heatmap(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.search",
            "+experiment=quick",
            "tuner.max_trials=2",
            "data.synthetic.n_examples=240",
            "search_space.pooling.values=[attention,classic]",
            "search.name=browser-check",
            "tracking.log_model=false",
            f"tracking.uri=sqlite:///{store}/mlflow.db",
            f"tracking.artifact_root={store}/a",
            f"tuner.directory={store}/tuner",
            f"hydra.run.dir={store}/hydra",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert search.returncode == 0, search.stderr[-2000:]
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("attention-search")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "trial"
    ]
    assert len(children) == 2
    child = children[0]  # attention or classic: both log attention heatmaps
    artifact = "attention/final_attention.png"
    with mlflow_server(uri, store) as base:
        with urllib.request.urlopen(
            f"{base}/get-artifact?path={artifact}&run_uuid={child.info.run_id}", timeout=30
        ) as resp:
            png = resp.read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
        shots = capture(
            base,
            exp.experiment_id,
            "browser-check",
            ["trial-001", "trial-002"],
            child.info.run_id,
            artifact,
            PROJECT_ROOT / "test-artifacts",
        )
    for path in shots.values():
        assert path.stat().st_size > 10_000
