"""The pause between trials over a long search: flat, or growing with the trials run?

Two real `run_search`es (keras-tuner's random oracle, the median pruner and its store
mirror, child runs, params, trial records, keras-tuner's own state files, weights), each
in its own process with its own fresh SQLite store, one part faked to keep 500 trials
short: `TrialRunner.trained` logs a seeded learning curve epoch by epoch (through the pruning
callback, as Keras would) instead of training.

The *late* search runs `--trials` trials; the *early* one runs `--window` trials. Over
the late search's last `--window` trials the two take turns, one trial each (a trial
and the pause after it, while the other process waits on a semaphore), so that the
pauses of trials 10-59 and of trials 450-499 are timed side by side: the VM's speed
drifts by +-20% over the minute a search takes, which made one search's early and late
pauses disagree run to run by more than the 10% being measured.

The pause is a trial run's end to the next trial run's start, timed in-process
(`perf_counter` around the tracker's run); the store's millisecond timestamps are shown
beside it.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config import compose_config
from pipeline.progress import say

GOAL = 0.10  # the late pause within 10% of the early one
TURN_TIMEOUT_S = 600.0  # a side waiting longer than this for its turn: the other died
FIRST_PAUSE = 10  # pauses from trial 10 on: the first trials warm caches


def fake_training(tiny_model, before_each=None):
    """A stand-in for `TrialRunner.trained` (building and `train_and_log`): a seeded
    curve, logged per epoch like the real one, seen by the extra callbacks (the pruner), no
    TensorFlow work. `before_each()` runs at the start of every trial (the two sides take
    turns there)."""
    from pipeline.search.trial import TrainedTrial
    from pipeline.tracking.schema import Metric

    @contextlib.contextmanager
    def trained(runner, spec, label, extra_callbacks=()):
        if before_each is not None:
            before_each()
        train, tracker = spec.train, runner.tracker
        rng = np.random.default_rng(abs(hash(label)) % 2**32)
        ceiling = float(rng.uniform(0.5, 0.95))
        epochs = int(train.epochs)
        tiny_model.stop_training = False
        for cb in extra_callbacks:
            cb.set_model(tiny_model)
            cb.params = {"epochs": epochs}
        metrics: dict[str, float] = {}
        for epoch in range(epochs):
            acc = ceiling * (1 - 0.5 ** (epoch + 1))
            metrics = {"val_accuracy": acc, "val_loss": 1 - acc, "val_macro_f1": acc}
            tracker.log_metrics({"loss": 1 - acc, **metrics}, step=epoch)
            for cb in extra_callbacks:
                cb.on_epoch_end(epoch, metrics)
            if tiny_model.stop_training:
                break
        tracker.log_metrics({Metric.TRAIN_SECONDS: 0.0})
        yield TrainedTrial(metrics, tiny_model, 0.0)

    return trained


def pauses_ms(runs) -> list[float]:
    """Start of each trial run minus the end of the one before (oldest first)."""
    ordered = sorted(runs, key=lambda r: r.start_time)
    return [b.start_time - a.end_time for a, b in zip(ordered, ordered[1:], strict=False)]


@contextlib.contextmanager
def timed_trial_runs(opened: list[float], closed: list[float]):
    """Times (perf_counter) at which each trial run is open and has ended, in-process."""
    from pipeline.tracking.runs import RunLifecycle
    from pipeline.tracking.schema import Kind, Tag

    real = RunLifecycle.run

    @contextlib.contextmanager
    def run(self, name, tags=None, *args, **kwargs):
        trial = (tags or {}).get(Tag.KIND) == Kind.TRIAL
        with real(self, name, tags, *args, **kwargs) as active:
            if trial:
                opened.append(time.perf_counter())
            yield active
        if trial:
            closed.append(time.perf_counter())

    RunLifecycle.run = run
    try:
        yield
    finally:
        RunLifecycle.run = real


class Turns:
    """Two processes taking turns, one trial each, from the late side's trial
    `first_shared` on (the early side waits for its first turn)."""

    def __init__(self, mine, theirs, first_shared: int):
        self.mine, self.theirs = mine, theirs
        self.first_shared = first_shared
        self.started = 0

    def before_trial(self) -> None:
        self.started += 1
        if self.started < self.first_shared:
            return
        if self.started > 1 or self.first_shared > 1:  # the early side's first: wait only
            self.theirs.release()
        if not self.mine.acquire(timeout=TURN_TIMEOUT_S):
            raise RuntimeError(f"the other search gave no turn back in {TURN_TIMEOUT_S:.0f} s")

    def done(self) -> None:
        self.theirs.release()  # the other side never waits on a search that has ended


def one_side(trials: int, first_shared: int, epochs: int, pruner: str, mine, theirs, out):
    """A child process: one faked search; puts (in-process pauses, store pauses) on `out`."""
    from pipeline.runtime.cli import frozen_heap, import_quietly, quiet

    quiet(verbose=False)
    import_quietly(False)
    import keras

    from pipeline.search.run import run_search
    from pipeline.search.runner import TrialRunner
    from pipeline.tracking.store import open_tracker

    turns = Turns(mine, theirs, first_shared)
    tiny = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    TrialRunner.trained = fake_training(tiny, turns.before_trial)
    opened: list[float] = []
    closed: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_config(
                [
                    "+experiment=quick",
                    "tuner=random",
                    f"tuner.max_trials={trials}",
                    f"tuner.pruning={pruner}",
                    f"train.epochs={epochs}",
                    "train.early_stopping.enabled=false",
                    "search.evaluate_test=false",
                    "search.name=pause",
                    "tracking.system_metrics_s=0",
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                    f"tracking.artifact_root={tmp}/artifacts",
                    f"tuner.directory={tmp}/tuner",
                ]
            )
            with (
                contextlib.redirect_stdout(io.StringIO()),
                timed_trial_runs(opened, closed),
                frozen_heap(),  # as `python -m pipeline.search` runs one
            ):
                run_search(cfg)
            tracker = open_tracker(cfg.tracking)
            search = tracker.find_search("pause")
            stored = pauses_ms([r for r in tracker.trial_runs(search.run_id) if r.end_time])
    finally:
        turns.done()
    timed = [(b - a) * 1000 for a, b in zip(closed, opened[1:], strict=False)]
    out.put((timed, stored))


@dataclass(frozen=True)
class Comparison:
    """Median pause early and late, their ratio and its 95% bootstrap interval."""

    early: float
    late: float
    ratio: float
    low: float
    high: float


def compare(early: Sequence[float], late: Sequence[float], seed: int = 0) -> Comparison:
    """Late median / early median, with a percentile bootstrap over both samples."""
    from scipy.stats import bootstrap

    a, b = np.asarray(early, dtype=float), np.asarray(late, dtype=float)
    ci = bootstrap(
        (a, b),
        lambda x, y, axis: np.median(y, axis=axis) / np.median(x, axis=axis),
        n_resamples=2000,
        method="percentile",
        random_state=seed,
    ).confidence_interval
    ratio = float(np.median(b) / np.median(a))
    return Comparison(float(np.median(a)), float(np.median(b)), ratio, ci.low, ci.high)


def run(args) -> None:
    if args.window + FIRST_PAUSE > args.trials:
        raise SystemExit(f"--window {args.window} leaves no late trials in --trials {args.trials}")
    ctx = mp.get_context("spawn")  # TensorFlow in each child, never forked
    late_turn, early_turn, out_late, out_early = (
        ctx.Semaphore(0),
        ctx.Semaphore(0),
        ctx.Queue(),
        ctx.Queue(),
    )
    shared_from = args.trials - args.window + 1  # the late side's first trial in turns
    late = ctx.Process(
        target=one_side,
        args=(args.trials, shared_from, args.epochs, args.pruner, late_turn, early_turn, out_late),
    )
    early = ctx.Process(
        target=one_side,
        args=(args.window, 1, args.epochs, args.pruner, early_turn, late_turn, out_early),
    )
    say(
        f"two faked searches ({args.epochs} epochs, pruner {args.pruner}), each in its own "
        f"process and SQLite store: {args.trials} trials, and {args.window} trials taking "
        f"turns with the first one's last {args.window} ..."
    )
    started = time.perf_counter()
    late.start()
    early.start()
    late_timed, late_stored = out_late.get()
    early_timed, early_stored = out_early.get()
    late.join()
    early.join()
    wall = time.perf_counter() - started
    n = args.window - FIRST_PAUSE  # pauses after trials 10 .. window - 1 of the early side
    timed = compare(early_timed[FIRST_PAUSE - 1 :], late_timed[-n:])
    stored = compare(early_stored[FIRST_PAUSE - 1 :], late_stored[-n:])
    last = args.trials - 1
    say(f"done in {wall:.0f} s; pause (a trial run's end to the next one's start), median ms:")
    say(f"  {'':34s} {'in-process':>10s} {'store':>7s}")
    say(
        f"  early search, after trials {FIRST_PAUSE}-{args.window - 1:<6d}"
        f"{timed.early:10.2f} {stored.early:7.1f}"
    )
    say(
        f"  late search, after trials {last - n + 1}-{last:<7d}"
        f"{timed.late:10.2f} {stored.late:7.1f}"
    )
    say(
        f"  late / early: {timed.ratio:.3f} in-process (95% interval {timed.low:.3f}-"
        f"{timed.high:.3f}), {stored.ratio:.3f} from the store"
    )
    alone = timed.late / statistics.median(late_timed[FIRST_PAUSE - 1 : FIRST_PAUSE - 1 + n])
    say(
        f"  (the late search alone, trials {FIRST_PAUSE}-{FIRST_PAUSE + n - 1} vs its last "
        f"{n}, a minute apart: {alone:.3f})"
    )
    verdict = "met" if timed.ratio <= 1 + GOAL else "NOT met"
    say(f"growth: {timed.ratio - 1:+.1%} (goal: within +{GOAL:.0%}): {verdict}")
