"""`python -m pipeline.reproduce RUN_ID [key=value ...]`: retrain one trial from its logs
and compare the metrics (see `pipeline.search.reproduction`). `key=value` overrides pick the
tracking store (e.g. `tracking.uri=...`), as for a search. Exit 0 on a match, 3 when the
metrics differ, 2 for bad input (also a run that did not end FINISHED: a FAILED or
interrupted trial has no final metrics to compare, so nothing is retrained)."""

from __future__ import annotations

import argparse

MISMATCH_EXIT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.reproduce",
        description="Retrain one trial run from what it logged and compare the metrics.",
    )
    parser.add_argument("run_id", help="id of a trial (child) run")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for the store, e.g. tracking.uri=..."
    )
    parser.add_argument("--tolerance", type=float, default=1e-6, help="max |difference|")
    args = parser.parse_intermixed_args(argv)

    from pipeline.runtime.cli import composed, guarded

    base = composed(args.overrides)

    def run() -> int:
        from pipeline import progress
        from pipeline.runtime.cli import import_quietly
        from pipeline.search.reproduction import plan_reproduction, retrain

        plan = plan_reproduction(base, args.run_id)  # checks first, before TensorFlow loads
        import_quietly(bool(base.search.verbose), "pipeline.search.trial")
        result = retrain(plan, args.tolerance)
        verdict = "match" if result.matches else "DIFFER"
        progress.say()
        progress.say(result.table)
        progress.say()
        progress.say(
            f"{verdict}: metrics of {args.run_id} and its reproduction "
            f"{result.reproduced.run_id} (tolerance {args.tolerance:g})"
        )
        return 0 if result.matches else MISMATCH_EXIT

    return guarded(run, verbose=bool(base.search.verbose))


if __name__ == "__main__":
    from pipeline.runtime.cli import exit_without_teardown

    exit_without_teardown(main)
