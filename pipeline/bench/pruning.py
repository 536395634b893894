"""The same random search with and without pruning: wall time and best validation score.

For each tuner seed, one search with `tuner.pruning=none` and one with the chosen
pruner, alternated in one process (same data, same trial sequence: the tuner seed fixes
which configurations are drawn), each into its own temporary store. Early stopping is
off so that only the pruner stops trials; attention diagnostics are off so the saving
shown is the training the pruner skipped.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time

from pipeline.config import compose_config, minimised
from pipeline.progress import say

GOAL_SAVING = 0.40  # at least 40% less wall time ...
GOAL_SCORE_POINTS = 0.5  # ... with the best score within 0.5 points (mean over seeds)


def one_search(args, pruning: str, tuner_seed: int, data) -> tuple[float, float, int, str]:
    """(wall seconds, best objective, pruned runs, best trial's label) of one search."""
    from pipeline.search.run import run_search
    from pipeline.tracking.store import open_tracker

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(
            [
                f"data={args.data}",
                "tuner=random",
                f"tuner.seed={tuner_seed}",
                f"tuner.max_trials={args.trials}",
                f"tuner.pruning={pruning}",
                f"train.epochs={args.epochs}",
                "train.early_stopping.enabled=false",
                "attention.enabled=false",
                "tracking.log_model=false",
                "tracking.system_metrics_s=0",
                "search.evaluate_test=false",
                f"search.name=pruning-{pruning}-{tuner_seed}",
                f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                f"tracking.artifact_root={tmp}/artifacts",
                f"tuner.directory={tmp}/tuner",
                *args.set,
            ]
        )
        tracker = open_tracker(cfg.tracking)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            outcome = run_search(cfg, data, tracker)
        wall = time.perf_counter() - started
        objective = cfg.tuner.objective
        pruned = int(outcome.trials["pruned"].notna().sum()) if "pruned" in outcome.trials else 0
        args.minimised = minimised(objective)
        best = outcome.best
        label = f"{best.get('variant', '?')} units={best.get('units', '?')}"
        return wall, float(best[objective]), pruned, label


def run(args) -> None:
    from pipeline.config import typed_data
    from pipeline.data import prepare

    data = prepare(typed_data(compose_config([f"data={args.data}", *args.set]).data))
    rows = []
    for seed in args.tuner_seeds:
        # Alternate which goes first, so drift on the machine hits both alike.
        order = ["none", args.pruner] if seed % 2 == 0 else [args.pruner, "none"]
        found = {p: one_search(args, p, seed, data) for p in order}
        rows.append((seed, found["none"], found[args.pruner]))
        say(
            f"tuner seed {seed}: none {found['none'][0]:.0f}s best {found['none'][1]:.4f} | "
            f"{args.pruner} {found[args.pruner][0]:.0f}s best {found[args.pruner][1]:.4f} "
            f"({found[args.pruner][2]} pruned); best trials: {found['none'][3]} | "
            f"{found[args.pruner][3]}"
        )
    say(
        f"\n{data.name}: {args.trials} random trials x {args.epochs} epochs, "
        f"{len(data.y['train'])} training examples, pruner {args.pruner}"
    )
    say(
        f"{'seed':>4}{'none s':>9}{'pruned s':>10}{'saving':>8}{'best none':>11}{'best pruned':>13}"
    )
    savings, gaps = [], []
    for seed, (t0, b0, *_), (t1, b1, *_) in rows:
        savings.append(1 - t1 / t0)
        gaps.append(100 * (b0 - b1))
        say(f"{seed:>4}{t0:>9.0f}{t1:>10.0f}{savings[-1]:>8.0%}{b0:>11.4f}{b1:>13.4f}")
    if args.minimised:
        gaps = [-g for g in gaps]
    saving, gap = statistics.mean(savings), statistics.mean(gaps)
    say(
        f"mean: {saving:.0%} less wall time, best score {gap:+.2f} points lower with pruning "
        f"(goal: >= {GOAL_SAVING:.0%} less, within {GOAL_SCORE_POINTS} points): "
        + ("met" if saving >= GOAL_SAVING and gap <= GOAL_SCORE_POINTS else "NOT met")
    )
