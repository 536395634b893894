"""Memory over many trials in one process: RSS after each of N small trials.

Plots, attention metrics and MLflow logging (model included) are on, as in a real
search. Growth is measured from trial 3 (after TensorFlow's one-off allocations) to
the last trial.
"""

from __future__ import annotations

import contextlib
import io
import tempfile

from omegaconf import OmegaConf

from pipeline.config import compose_config, typed_data
from pipeline.data import prepare
from pipeline.progress import say
from pipeline.runtime.cli import frozen_heap
from pipeline.search.run import run_search
from pipeline.tracking.store import open_tracker

GOAL = 0.05


def run(args) -> None:
    cfg = compose_config(
        [
            "+experiment=quick",
            f"tuner.max_trials={args.trials}",
            "data.synthetic.n_examples=600",
            "search.evaluate_test=false",
        ]
    )
    data = prepare(typed_data(cfg.data))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = OmegaConf.merge(
            cfg,
            {
                "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "artifact_root": f"{tmp}/a"},
                "tuner": {"directory": f"{tmp}/tuner"},
            },
        )
        tracker = open_tracker(cfg.tracking)
        with contextlib.redirect_stdout(io.StringIO()), frozen_heap():
            outcome = run_search(cfg, data, tracker)
    trials = outcome.trials[outcome.trials["status"] == "FINISHED"]
    say(f"{'trial':>5}{'variant':>16}{'RSS MB':>9}")
    for _, row in trials.iterrows():
        say(f"{int(row['trial']):>5}{row['variant']:>16}{row['rss_mb']:>9.1f}")
    rss = trials["rss_mb"].tolist()
    if len(rss) >= 4:
        growth = rss[-1] / rss[2] - 1
        verdict = "ok" if growth < GOAL else "over the goal"
        say(f"growth trial 3 -> {len(rss)}: {growth:+.1%} (goal < {GOAL:.0%}: {verdict})")
