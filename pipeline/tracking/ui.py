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


class UiTour:
    """One headless Chromium on a running MLflow UI, in its model-training view with the
    assistant panel closed. Each method waits for what it checks (raising if it does not
    show) and saves a screenshot under `out_dir`."""

    def __init__(self, base: str, experiment_id: str, out_dir: Path):
        self.base, self.experiment_id, self.out_dir = base, experiment_id, out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> UiTour:
        from playwright.sync_api import sync_playwright

        self._profile = tempfile.TemporaryDirectory()
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch_persistent_context(
            self._profile.name,
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        self.page = self._browser.new_page()
        return self

    def __exit__(self, *exc) -> None:
        self._browser.close()
        self._pw.stop()
        self._profile.cleanup()

    def open(self, route: str) -> None:
        """A UI route in the model-training view (MLflow 3.17 keeps the GenAI/training
        choice per browser, `workflowType`); screenshots close the assistant panel."""
        joiner = "&" if "?" in route else "?"
        self.page.goto(f"{self.base}/#{route}{joiner}workflowType={WORKFLOW}")

    def shot(self, name: str, full_page: bool = False) -> Path:
        close = self.page.locator(f"button[data-component-id='{ASSISTANT_CLOSE}']")
        if close.count() and close.first.is_visible():
            close.first.click()  # it covers a quarter of the page
            close.first.wait_for(state="hidden", timeout=10_000)
        path = self.out_dir / f"{name}.png"
        self.page.screenshot(path=path, full_page=full_page)
        return path

    def runs_table(self, parent_name: str, child_names: list[str]) -> Path:
        """The experiment's runs, the first parent expanded to show its children."""
        self.open(f"/experiments/{self.experiment_id}/runs")
        self.page.get_by_text(parent_name, exact=True).first.wait_for(timeout=60_000)
        row = self.page.locator("[role='row']").filter(
            has=self.page.get_by_text(parent_name, exact=True)
        )
        row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for name in child_names:
            self.page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        return self.shot("mlflow_runs")

    def filtered(self, query: str, parent_names: list[str], matching: int) -> Path:
        """The runs table filtered by a search query: the count and every parent show."""
        self.open(f"/experiments/{self.experiment_id}/runs")
        box = self.page.locator(f"input[placeholder*='{SEARCH_PLACEHOLDER}']").first
        box.wait_for(timeout=60_000)
        box.fill(query)
        box.press("Enter")
        self.page.get_by_text(f"{matching} matching runs").first.wait_for(timeout=30_000)
        for name in parent_names:
            self.page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        return self.shot("mlflow_filtered")

    def compare(self, run_ids: list[str], axes: list[str]) -> Path:
        """The compare page of these runs: its parallel-coordinates plot shows `axes`
        (param and metric names) without any selection by hand."""
        ids = ",".join(f'"{r}"' for r in run_ids)
        self.open(f'/compare-runs?runs=[{ids}]&experiments=["{self.experiment_id}"]')
        labels = self.page.locator(".parcoords .axis-title, .parcoords text.axis-title")
        labels.first.wait_for(timeout=60_000)
        shown = set(labels.all_text_contents())
        missing = [a for a in axes if a not in shown]
        if missing:
            raise AssertionError(f"parallel coordinates show {sorted(shown)}, not {missing}")
        return self.shot("mlflow_compare")

    def system_metrics(self, run_id: str, metric: str = "cpu_utilization_percentage") -> Path:
        self.open(f"/experiments/{self.experiment_id}/runs/{run_id}/system-metrics")
        self.page.get_by_text(metric, exact=True).first.wait_for(timeout=60_000)
        return self.shot("mlflow_system_metrics")

    def registered_model(self, name: str) -> Path:
        self.open("/models")
        self.page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        self.page.keyboard.press("Escape")  # MLflow's "new Model Registry UI" announcement
        return self.shot("mlflow_models")

    def artifact_image(self, run_id: str, artifact: str) -> Path:
        """A run's PNG artifact, rendered by the artifact viewer."""
        self.open(f"/experiments/{self.experiment_id}/runs/{run_id}/artifacts/{artifact}")
        self.page.wait_for_function(
            """() => [...document.images].some(
                   i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 300)""",
            timeout=60_000,
        )
        return self.shot("mlflow_attention")


WORKFLOW = "machine_learning"
ASSISTANT_CLOSE = "mlflow.assistant.chat_panel.close"
SEARCH_PLACEHOLDER = "metrics.rmse < 1"
