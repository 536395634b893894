"""Drive the MLflow UI in headless Chromium (Playwright + Debian's chromium).

Used by the browser test and by `python -m pipeline.ui_capture` to regenerate the
README screenshots from a real store, so both show the same thing the same way.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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
