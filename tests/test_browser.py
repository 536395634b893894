"""The MLflow UI, in headless Chromium, shows a tiny real search and its attention heatmap.

Starts `mlflow server` on 127.0.0.1 against a store made by the real CLI, renders the
experiment page with Chromium's own --dump-dom/--screenshot, and checks that the runs
table lists the parent and the children and that a child's heatmap PNG is served and
shown. Screenshots are kept in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A tiny real search, then an MLflow server over its store."""
    store = tmp_path_factory.mktemp("store")
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
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--workers",
            "1",
        ],
        cwd=store,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health")
        yield base, store
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make browser installs it)")
def test_ui_lists_runs_and_serves_the_attention_heatmap(ui):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    base, store = ui
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("attention-search")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "trial"
    ]
    assert len(children) == 2
    child = children[0]  # attention or classic: both log attention heatmaps
    artifact = "attention/final_attention.png"
    with urllib.request.urlopen(
        f"{base}/get-artifact?path={artifact}&run_uuid={child.info.run_id}", timeout=30
    ) as resp:
        png = resp.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/#/experiments/{exp.experiment_id}/runs")
            page.get_by_text("browser-check").first.wait_for(timeout=60_000)
            # Children are collapsed under their parent: expand the parent row.
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            for name in ("trial-001", "trial-002"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=ARTIFACTS / "mlflow_runs.png")

            page.goto(
                f"{base}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}"
                f"/artifacts/{artifact}"
            )
            shown = page.wait_for_function(
                """() => [...document.images].some(
                       i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 300)""",
                timeout=60_000,
            )
            assert shown
            page.screenshot(path=ARTIFACTS / "mlflow_attention_artifact.png")
        finally:
            browser.close()
    assert (ARTIFACTS / "mlflow_runs.png").stat().st_size > 10_000
