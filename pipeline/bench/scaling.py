"""Trials per hour: the same fixed set of trials with 1 worker vs 2 workers (1 thread each),
per tracking store.

Each mode is a real `python -m pipeline.search cluster=workers ...` into its own temporary
store, run one after the other in this invocation. Stores (`--stores`): `sqlite` (the
search writes the file itself), `sqlite-server` and `postgres-server` (an `mlflow server`
with served artifacts over a SQLite file or a throwaway PostgreSQL cluster with its
default durability, as in docs/team.md). Throughput counts the trial phase (first
child run start to last child run end, from MLflow) and, separately, the whole command
(process start-up, chief, summary). A `local` run (one process, TensorFlow's own threads)
is shown for reference on the first store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.config import PROJECT_ROOT

GOAL = 1.7
PG_TOLERANCE = 0.05  # the PostgreSQL-backed server no slower than the SQLite-backed one


def search(uri: str, tmp: str, extra: list[str], args) -> tuple[float, float, int]:
    """(trial-phase seconds, command seconds, finished trials) of one search into `uri`."""
    from pipeline.tracking import Status
    from pipeline.tracking.store import Tracker

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


@contextmanager
def store(kind: str, tmp: str) -> Iterator[str]:
    """The tracking URI searches use for one kind of store, alive while in the block."""
    from pipeline.tracking.mlflow_server import free_port, mlflow_server
    from pipeline.tracking.postgres import throwaway_postgres

    if kind == "sqlite":
        yield f"sqlite:///{tmp}/mlflow.db"
    elif kind == "sqlite-server":
        with mlflow_server(f"sqlite:///{tmp}/server.db", tmp, f"{tmp}/served") as base:
            yield base
    elif kind == "postgres-server":
        with throwaway_postgres(free_port()) as pg:
            os.environ.update(pg.env)  # the server's libpq reads PGPASSWORD
            with mlflow_server(pg.uri, tmp, f"{tmp}/served") as base:
                yield base
    else:
        raise SystemExit(f"unknown store {kind}: sqlite, sqlite-server or postgres-server")


MODES = {
    "1 worker x 1 thread": ["cluster=workers", "cluster.n_workers=1"],
    "2 workers x 1 thread": ["cluster=workers", "cluster.n_workers=2"],
}
LOCAL = "local (1 process, all threads)"


def run(args) -> None:
    results: dict[tuple[str, str], tuple[float, float, int]] = {}
    for index, kind in enumerate(args.stores):
        modes = dict(MODES, **({LOCAL: []} if index == 0 and args.local else {}))
        for name, extra in modes.items():
            with tempfile.TemporaryDirectory() as tmp, store(kind, tmp) as uri:
                results[(kind, name)] = search(uri, tmp, extra, args)
            print(f"{kind}, {name}: done", flush=True)
    print(
        f"\n{args.trials} trials (random dropout and learning rate, tuner.seed=0, attention "
        f"pooling, 32 units), {args.epochs} epochs each, synthetic data"
    )
    print(
        f"{'store':<17}{'mode':<32}{'trials':>7}{'phase s':>9}{'trials/h':>10}{'ratio':>8}"
        f"{'command s':>11}{'trials/h':>10}{'ratio':>8}"
    )
    for (kind, name), (phase, wall, n) in results.items():
        base_phase, base_wall, _ = results[(kind, "1 worker x 1 thread")]
        print(
            f"{kind:<17}{name:<32}{n:>7}{phase:>9.1f}{n / phase * 3600:>10.0f}"
            f"{base_phase / phase:>7.2f}x{wall:>11.1f}{n / wall * 3600:>10.0f}"
            f"{base_wall / wall:>7.2f}x"
        )
    print(f"goal: 2 workers >= {GOAL}x the trials/hour of 1 worker (trial phase)")
    if "postgres-server" in args.stores and "sqlite-server" in args.stores:
        for name in MODES:
            pg = results[("postgres-server", name)]
            lite = results[("sqlite-server", name)]
            print(
                f"{name}: postgres-server {pg[2] / pg[0] * 3600:.0f} vs sqlite-server "
                f"{lite[2] / lite[0] * 3600:.0f} trials/h = {lite[0] / pg[0]:.2f}x "
                f"(goal: >= {1 - PG_TOLERANCE:.2f}x, no slower within {PG_TOLERANCE:.0%})"
            )
