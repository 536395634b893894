"""The MLflow UI, in headless Chromium, shows a tiny real search and its attention heatmap.

A tiny real search (in-process), then `mlflow server` on 127.0.0.1 over its store,
then Playwright driving Debian's chromium: the runs table must list the parent and
(expanded) its children, and a child's heatmap PNG must be served and rendered.
Screenshots are kept in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import urllib.request

import pytest

from pipeline.tracking.mlflow_server import mlflow_server
from pipeline.tracking.ui import capture, chromium_path
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (`make browser` installs it as root)"
)
def test_ui_lists_runs_and_serves_the_attention_heatmap(store):
    from pipeline.search import run_search

    run_search(
        store.compose(
            "+experiment=quick",
            "tuner.max_trials=2",
            "data.synthetic.n_examples=240",
            "search_space.pooling.values=[attention,classic]",
            "search.name=browser-check",
            "tracking.log_model=false",
        )
    )
    children = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    assert len(children) == 2
    child = children[0]  # attention or classic: both log attention heatmaps
    exp_id = child.info.experiment_id
    artifact = "attention/final_attention.png"
    with mlflow_server(store.uri, store.path) as base:
        with urllib.request.urlopen(
            f"{base}/get-artifact?path={artifact}&run_uuid={child.info.run_id}", timeout=30
        ) as resp:
            png = resp.read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
        shots = capture(
            base,
            exp_id,
            "browser-check",
            ["trial-001", "trial-002"],
            child.info.run_id,
            artifact,
            PROJECT_ROOT / "test-artifacts",
        )
    for path in shots.values():
        assert path.stat().st_size > 10_000
