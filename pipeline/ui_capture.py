"""Drive the MLflow UI in headless Chromium (Playwright + Debian's chromium).

Used by the browser test and by `python -m pipeline.ui_capture` to regenerate the
README screenshots from a real store, so both show the same thing the same way.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.server import mlflow_server

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


def main(argv: list[str] | None = None) -> int:
    """Regenerate README screenshots from a finished search in a local SQLite store."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.ui_capture", description=main.__doc__)
    parser.add_argument("--db", default="mlruns/mlflow.db")
    parser.add_argument("--search", required=True, help="parent run name (search.name)")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args(argv)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{Path(args.db).resolve()}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("attention-search")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if r.info.run_name == args.search)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    attention = [r for r in children if r.data.params.get("pooling") == "attention"]
    best = max(attention or children, key=lambda r: r.data.metrics.get("val_accuracy", 0))
    out = Path(args.out)
    kind = (
        "attention" if best.data.params.get("pooling") in ("attention", "classic") else "saliency"
    )
    artifact = f"attention/final_{kind}.png"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(client.download_artifacts(best.info.run_id, artifact, tmp), out / "heatmap.png")
    with mlflow_server(uri, Path(args.db).resolve().parent) as base:
        shots = capture(
            base,
            exp.experiment_id,
            parent.info.run_name,
            [r.info.run_name for r in children][:3],
            best.info.run_id,
            artifact,
            out,
        )
    print("\n".join(str(p) for p in [out / "heatmap.png", *shots.values()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
