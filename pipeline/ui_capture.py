"""`python -m pipeline.ui_capture --search NAME`: regenerate the README screenshots of the
MLflow UI from a finished search (see `pipeline.tracking.ui`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ui_capture",
        description="Regenerate README screenshots from a finished search in a local store.",
    )
    parser.add_argument("--db", default="mlruns/mlflow.db")
    parser.add_argument("--search", required=True, help="search name (parent run)")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args(argv)

    from pipeline.cli import guarded
    from pipeline.tracking.ui import capture_search

    def run() -> int:
        print("\n".join(str(p) for p in capture_search(args.db, args.search, Path(args.out))))
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
