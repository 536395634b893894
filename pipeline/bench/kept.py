"""Kept models (`search.keep_compiled`, pipeline/training/compiled.py) where they apply: a
seed-replicate search (each configuration trained once per seed), in this process, with
`keep_compiled=0` and with the configured capacity, rounds alternated. Prints each
round's wall time, the kept-model hits and whether every trial's validation metrics
equal the other mode's (the kept models must train exactly as new ones)."""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time

from omegaconf import OmegaConf

from pipeline.config import VALIDATION_METRICS, compose_config, typed_data
from pipeline.data import prepare
from pipeline.progress import say
from pipeline.search.run import run_search
from pipeline.tracking.store import open_tracker
from pipeline.training.compiled import KEPT


def one_search(cfg, data, keep: int) -> tuple[float, int, dict]:
    """(wall seconds, kept-model hits, {(trial, seed): validation metrics})."""
    KEPT.clear()  # no model left over from another round
    hits = KEPT.hits
    with tempfile.TemporaryDirectory() as tmp:
        cfg = OmegaConf.merge(
            cfg,
            {
                "search": {"keep_compiled": keep},
                "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "artifact_root": f"{tmp}/a"},
                "tuner": {"directory": f"{tmp}/tuner"},
            },
        )
        tracker = open_tracker(cfg.tracking)
        started = time.perf_counter()
        mlflow_log = logging.getLogger("mlflow")
        level = mlflow_log.level
        mlflow_log.setLevel(logging.ERROR)  # its warnings on every logged model
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                outcome = run_search(cfg, data, tracker)
        finally:
            mlflow_log.setLevel(level)
        seconds = time.perf_counter() - started
    metrics = {
        (int(row["trial"]), int(row["seed"])): {
            k: row[k] for k in VALIDATION_METRICS if k in row and row[k] == row[k]
        }
        for _, row in outcome.trials.iterrows()
    }
    return seconds, KEPT.hits - hits, metrics


def run(args) -> None:
    cfg = compose_config(
        [
            "+experiment=quick",
            f"tuner.max_trials={args.trials}",
            f"search.seeds=[{','.join(str(s) for s in range(args.seeds))}]",
            *args.set,
        ]
    )
    data = prepare(typed_data(cfg.data))
    keep = int(args.keep)
    say(
        f"{args.trials} configurations x {args.seeds} seeds (quick preset), "
        f"keep_compiled 0 vs {keep}, {args.rounds} alternated rounds"
    )
    times: dict[int, list[float]] = {0: [], keep: []}
    reference: dict | None = None  # the first keep_compiled=0 round's metrics
    for r in range(args.rounds):
        for mode in (0, keep) if r % 2 == 0 else (keep, 0):
            seconds, hits, metrics = one_search(cfg, data, mode)
            times[mode].append(seconds)
            line = f"round {r + 1} keep_compiled={mode}: {seconds:.1f} s, {hits} kept-model hits"
            if reference is None and mode == 0:
                reference, line = metrics, line + " (the reference metrics)"
            elif reference is not None:
                line += f", metrics {'equal' if metrics == reference else 'DIFFER'}"
            say(line)
    off, on = statistics.median(times[0]), statistics.median(times[keep])
    say(f"median: {off:.1f} s vs {on:.1f} s: {off / on:.2f}x faster with kept models")
