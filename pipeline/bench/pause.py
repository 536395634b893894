"""The pause between trials over a long search: flat, or growing with the trials run?

A real `run_search` (keras-tuner's random oracle, the median pruner and its store mirror,
child runs, params, trial records, keras-tuner's own state files, weights) into a fresh
SQLite store, with one part faked to keep 500 trials short: `train_and_log` logs a
seeded learning curve epoch by epoch (through the pruning callback, as Keras would)
instead of training. The pause is read from the store: a trial run's start minus the
previous one's end. Compared: the median pause of trials 10-29 against the last 20.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time

import numpy as np

from pipeline.config import compose_config
from pipeline.progress import say

GOAL = 0.10  # the late pause within 10% of the early one


def fake_training(tiny_model):
    """A stand-in for `trial.train_and_log`: a seeded curve, logged per epoch like the
    real one, seen by the extra callbacks (the pruner), no TensorFlow work."""
    from pipeline.search.trial import TrainedTrial
    from pipeline.tracking.schema import Metric

    def train_and_log(logging, model_settings, train, build, label, extra_callbacks=()):
        rng = np.random.default_rng(abs(hash(label)) % 2**32)
        ceiling = float(rng.uniform(0.5, 0.95))
        epochs = int(train["epochs"])
        tiny_model.stop_training = False
        for cb in extra_callbacks:
            cb.set_model(tiny_model)
            cb.params = {"epochs": epochs}
        metrics: dict[str, float] = {}
        for epoch in range(epochs):
            acc = ceiling * (1 - 0.5 ** (epoch + 1))
            metrics = {"val_accuracy": acc, "val_loss": 1 - acc, "val_macro_f1": acc}
            logging.tracker.log_metrics({"loss": 1 - acc, **metrics}, step=epoch)
            for cb in extra_callbacks:
                cb.on_epoch_end(epoch, metrics)
            if tiny_model.stop_training:
                break
        logging.tracker.log_metrics({Metric.TRAIN_SECONDS: 0.0})
        return TrainedTrial(metrics, tiny_model, 0.0)

    return train_and_log


def pauses_ms(runs) -> list[float]:
    """Start of each trial run minus the end of the one before (oldest first)."""
    ordered = sorted(runs, key=lambda r: r.start_time)
    return [b.start_time - a.end_time for a, b in zip(ordered, ordered[1:], strict=False)]


def run(args) -> None:
    import keras

    from pipeline.search import tuner as tuner_module
    from pipeline.search.run import run_search
    from pipeline.tracking.store import open_tracker

    tiny = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    real = tuner_module.train_and_log
    tuner_module.train_and_log = fake_training(tiny)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_config(
                [
                    "+experiment=quick",
                    "tuner=random",
                    f"tuner.max_trials={args.trials}",
                    f"tuner.pruning={args.pruner}",
                    f"train.epochs={args.epochs}",
                    "train.early_stopping.enabled=false",
                    "search.evaluate_test=false",
                    "search.name=pause",
                    "tracking.system_metrics_s=0",
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                    f"tracking.artifact_root={tmp}/artifacts",
                    f"tuner.directory={tmp}/tuner",
                ]
            )
            say(
                f"{args.trials} faked trials ({args.epochs} epochs, pruner {args.pruner}) "
                "into a fresh SQLite store ..."
            )
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_search(cfg)
            wall = time.perf_counter() - started
            tracker = open_tracker(cfg.tracking)
            search = tracker.find_search("pause")
            trials = [r for r in tracker.trial_runs(search.run_id) if r.end_time]
    finally:
        tuner_module.train_and_log = real
    gaps = pauses_ms(trials)
    early, late = gaps[9:29], gaps[-20:]
    a, b = statistics.median(early), statistics.median(late)
    growth = b / a - 1
    each = wall / max(1, len(trials)) * 1000
    say(f"{len(trials)} trial runs in {wall:.0f} s ({each:.0f} ms each, pauses included)")
    say(f"median pause, trials 10-29: {a:7.1f} ms")
    say(f"median pause, the last 20:  {b:7.1f} ms")
    for at in (10, 100, 250, len(gaps)):
        window = gaps[max(0, at - 10) : at]
        if window:
            say(f"  around trial {at:>4}: {statistics.median(window):7.1f} ms")
    verdict = "met" if growth <= GOAL else "NOT met"
    say(f"late / early = {b / a:.2f} (goal: within +{GOAL:.0%}): {verdict}")
