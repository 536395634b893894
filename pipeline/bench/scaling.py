"""Trials per hour: the same fixed set of trials with 1 worker vs 2 workers (1 thread each).

Each mode is a real `python -m pipeline.search cluster=workers ...` into its own temporary
store, run one after the other in this invocation. Throughput counts the trial phase
(first child run start to last child run end, from MLflow) and, separately, the whole
command (process start-up, chief, summary). A `local` run (one process, TensorFlow's own
threads) is shown for reference.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from pipeline.config import PROJECT_ROOT

GOAL = 1.7


def search(tmp: str, extra: list[str], args) -> tuple[float, float, int]:
    """(trial-phase seconds, command seconds, finished trials)."""
    from pipeline.tracking import Status
    from pipeline.tracking.store import Tracker

    uri = f"sqlite:///{tmp}/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "pipeline.search",
        # random, not grid: keras-tuner's grid oracle derives each next point from a
        # finished trial, so its workers mostly take turns. tuner.seed fixes the trial set.
        # Only dropout and learning rate vary: every trial costs the same, so the ratio
        # measures scaling, not which worker drew the biggest model last.
        "~search_space.pooling",
        "~search_space.attention_activation",
        "~search_space.attention_normalizer",
        "~search_space.units",
        "~search_space.embedding_dim",
        "tuner=random",
        f"tuner.max_trials={args.trials}",
        f"train.epochs={args.epochs}",
        "train.early_stopping.enabled=false",
        "tracking.log_model=false",
        f"tracking.uri={uri}",
        f"tracking.artifact_root={tmp}/artifacts",
        f"tuner.directory={tmp}/tuner",
        f"hydra.run.dir={tmp}/hydra",
        "search.name=scaling",
        "search.evaluate_test=false",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    tracker = Tracker(uri, "attention-search", f"{tmp}/artifacts")
    tracker.connect()
    search = tracker.find_search("scaling")
    trials = tracker.trial_runs([search.run_id], status=Status.FINISHED)
    phase = (max(r.end_time for r in trials) - min(r.start_time for r in trials)) / 1000
    return phase, wall, len(trials)


def run(args) -> None:
    modes = {
        "1 worker x 1 thread": ["cluster=workers", "cluster.n_workers=1"],
        "2 workers x 1 thread": ["cluster=workers", "cluster.n_workers=2"],
        "local (1 process, all threads)": [],
    }
    results = {}
    for name, extra in modes.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = search(tmp, extra, args)
            print(f"{name}: done", flush=True)
    base_phase, base_wall, _ = results["1 worker x 1 thread"]
    print(
        f"\n{args.trials} trials (random dropout and learning rate, tuner.seed=0, attention "
        f"pooling, 32 units), {args.epochs} epochs each, synthetic data"
    )
    print(
        f"{'mode':<32}{'trials':>7}{'phase s':>9}{'trials/h':>10}{'ratio':>8}"
        f"{'command s':>11}{'trials/h':>10}{'ratio':>8}"
    )
    for name, (phase, wall, n) in results.items():
        print(
            f"{name:<32}{n:>7}{phase:>9.1f}{n / phase * 3600:>10.0f}{base_phase / phase:>7.2f}x"
            f"{wall:>11.1f}{n / wall * 3600:>10.0f}{base_wall / wall:>7.2f}x"
        )
    print(f"goal: 2 workers >= {GOAL}x the trials/hour of 1 worker (trial phase)")
