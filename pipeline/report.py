"""`python -m pipeline.report [SEARCH] [--all] [--out DIR] [key=value ...]`: the
leaderboard and paired comparisons of a search, from the store (see
`pipeline.reporting.search_report`). Never imports TensorFlow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Leaderboard and paired comparisons of a search's trial runs, from MLflow.",
    )
    parser.add_argument("search", nargs="?", help="search name (default: the latest search)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. tracking.uri=...")
    parser.add_argument("--all", action="store_true", help="every search of the experiment")
    parser.add_argument("--out", help="output folder (default mlruns/reports/<search>)")
    parser.add_argument("--objective", help="metric to rank and compare (default: the search's)")
    parser.add_argument(
        "--baseline", help="compare every configuration against this one (default: search.baseline)"
    )
    parser.add_argument(
        "--margin", type=float, default=1.0, help="equivalence margin in points (default 1)"
    )
    parser.add_argument(
        "--adjust",
        default="holm",
        choices=["holm", "bonferroni", "holm-sidak", "sidak", "hommel", "fdr_bh", "fdr_by"],
        help="multiple-comparison adjustment (statsmodels multipletests; default holm)",
    )
    args = parser.parse_intermixed_args(argv)
    if args.search and "=" in args.search:  # an override, not a name
        args.overrides.insert(0, args.search)
        args.search = None

    from pipeline.runtime.cli import composed, guarded

    cfg = composed(args.overrides)

    def run() -> int:
        from pipeline.reporting.search_report import run_report
        from pipeline.tracking import open_tracker

        report = run_report(
            open_tracker(cfg.tracking),
            args.search,
            every_search=args.all,
            objective=args.objective,
            out=Path(args.out) if args.out else None,
            argv=argv,
            baseline=args.baseline,
            margin=args.margin,
            adjust=args.adjust,
        )
        print(report.markdown)
        where = (
            f"; logged on parent run {report.parent.run_id} under report/" if report.parent else ""
        )
        if report.not_logged:
            where = f"; not logged on the parent run: {report.not_logged}"
        print(f"report written to {report.out}{where}")
        return 0

    return guarded(run, verbose=bool(cfg.search.verbose))


if __name__ == "__main__":
    sys.exit(main())
