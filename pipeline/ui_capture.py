"""`python -m pipeline.ui_capture --search NAME`: regenerate the README screenshots of the
MLflow UI from a finished search (the browser part is `pipeline.tracking.ui`)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def capture_search(db: str, search: str, out: Path) -> list[Path]:
    """README images from a finished search in a local SQLite store: the heatmap (or
    saliency) of its best attention trial; the runs table, the compare page of its trials
    and that artifact in the UI."""
    from pipeline.models.registry import get_pooling
    from pipeline.tracking import Artifact, Metric, Tracker, TrackingError
    from pipeline.tracking.mlflow_server import mlflow_server
    from pipeline.tracking.ui import UiTour

    uri = f"sqlite:///{Path(db).resolve()}"
    tracker = Tracker(uri, "attention-search", str(Path(db).resolve().parent / "artifacts"))
    tracker.connect()
    parent = tracker.find_search(search)
    if parent is None:
        raise TrackingError(f"no search named '{search}' in {uri}")
    children = tracker.trial_runs(parent.run_id)

    def pooling(run) -> str:  # every run's params since the full-config layout; older: searched
        return run.params.get("model.pooling") or run.hyperparameters.get("pooling", "mean")

    weighted = [r for r in children if get_pooling(pooling(r)).attention_weights]
    best = max(weighted or children, key=lambda r: r.metrics.get(Metric.VAL_ACCURACY, 0))
    kind = "attention" if best in weighted else "saliency"
    artifact = Artifact.attention("final", kind, "png")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tracker.download_artifact(best.run_id, artifact, tmp), out / "heatmap.png")
    with (
        mlflow_server(uri, Path(db).resolve().parent) as base,
        UiTour(base, best.experiment_id, out) as tour,
    ):
        shots = [
            tour.runs_table(parent.name, [r.name for r in children][:3]),
            tour.compare([r.run_id for r in children], [parent.objective or "val_accuracy"]),
            tour.artifact_image(best.run_id, artifact),
        ]
    return [out / "heatmap.png", *shots]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ui_capture",
        description="Regenerate README screenshots from a finished search in a local store.",
    )
    parser.add_argument("--db", default="mlruns/mlflow.db")
    parser.add_argument("--search", required=True, help="search name (parent run)")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args(argv)

    from pipeline.runtime.cli import guarded

    def run() -> int:
        print("\n".join(str(p) for p in capture_search(args.db, args.search, Path(args.out))))
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
