"""Drive the MLflow UI in headless Chromium (Playwright + Debian's chromium).

Used by the browser test and by `python -m pipeline.ui_capture` to regenerate the
README screenshots from a real store, so both show the same thing the same way.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipeline.tracking.server import mlflow_server

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def capture(
    base: str,
    experiment_id: str,
    parent_name: str,
    child_names: list[str],
    child_run_id: str,
    artifact: str,
    out_dir: Path,
) -> dict[str, Path]:
    """Screenshot the runs table (parent expanded) and a child's PNG artifact view.

    Raises if the parent or any child name does not show, or the image does not load.
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {"runs": out_dir / "mlflow_runs.png", "artifact": out_dir / "mlflow_attention.png"}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/#/experiments/{experiment_id}/runs")
            page.get_by_text(parent_name, exact=True).first.wait_for(timeout=60_000)
            # Children are collapsed under their parent: expand the parent row.
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            for name in child_names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=shots["runs"])
            page.goto(
                f"{base}/#/experiments/{experiment_id}/runs/{child_run_id}/artifacts/{artifact}"
            )
            page.wait_for_function(
                """() => [...document.images].some(
                       i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 300)""",
                timeout=60_000,
            )
            page.screenshot(path=shots["artifact"])
        finally:
            browser.close()
    return shots


def capture_search(db: str, search: str, out: Path) -> list[Path]:
    """README images from a finished search in a local SQLite store: the heatmap (or
    saliency) of its best attention trial, the runs table and that artifact in the UI."""
    from pipeline.models.registry import get_pooling
    from pipeline.tracking.schema import Artifact, Metric
    from pipeline.tracking.store import Tracker, TrackingError

    uri = f"sqlite:///{Path(db).resolve()}"
    tracker = Tracker(uri, "attention-search", str(Path(db).resolve().parent / "artifacts"))
    tracker.connect()
    parent = tracker.find_search(search)
    if parent is None:
        raise TrackingError(f"no search named '{search}' in {uri}")
    children = tracker.trial_runs(parent.run_id)
    weighted = [
        r for r in children if get_pooling(r.params.get("pooling", "mean")).attention_weights
    ]
    best = max(weighted or children, key=lambda r: r.metrics.get(Metric.VAL_ACCURACY, 0))
    kind = "attention" if best in weighted else "saliency"
    artifact = Artifact.attention("final", kind, "png")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tracker.download_artifact(best.run_id, artifact, tmp), out / "heatmap.png")
    with mlflow_server(uri, Path(db).resolve().parent) as base:
        shots = capture(
            base,
            best.experiment_id,
            parent.name,
            [r.name for r in children][:3],
            best.run_id,
            artifact,
            out,
        )
    return [out / "heatmap.png", *shots.values()]
