"""`python -m pipeline.reproduce RUN_ID [key=value ...]`: retrain one trial from its logs.

Rebuilds the exact config of a child run from what the search logged (the parent's
resolved `config.yaml` and vocabulary, the child's `trial.json` with hyperparameters,
seed and data fingerprint), refuses when the data no longer matches, retrains with op
determinism through the same code path as the tuner (`pipeline.trial`), logs a new run
tagged `reproduces=RUN_ID` and prints both runs' metrics side by side.
`key=value` overrides pick the tracking store (e.g. `tracking.uri=...`), as for a search.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Metrics that measure the machine, not the model: never compared.
UNCOMPARED = ("train_seconds",)
MISMATCH_EXIT = 3


@dataclass
class Source:
    """What a child run logged, enough to train it again."""

    run: Any
    cfg: DictConfig
    values: dict[str, Any]
    seed: int
    executions: int
    fingerprint: str
    vocab: list[str]


def load_source(tracker, run_id: str) -> Source:
    from pipeline.config import Config
    from pipeline.errors import SearchError

    run = tracker.get_run(run_id)
    tags = run.data.tags
    parent_id = tags.get("mlflow.parentRunId")
    if tags.get("kind") != "trial" or not parent_id:
        raise SearchError(
            f"run {run_id} is not a trial run of a search (kind={tags.get('kind', '?')}); "
            "pass the id of a child run"
        )
    trial = json.loads(tracker.read_artifact(run_id, "trial.json"))
    logged = OmegaConf.create(tracker.read_artifact(parent_id, "config.yaml"))
    cfg = OmegaConf.merge(OmegaConf.structured(Config), logged)
    vocab = tracker.read_artifact(parent_id, "vocab.txt").split("\n")
    return Source(
        run=run,
        cfg=cfg,
        values=trial["hyperparameters"],
        seed=int(trial["seed"]),
        executions=int(trial.get("executions_per_trial", 1)),
        fingerprint=trial["data_fingerprint"],
        vocab=vocab,
    )


def compared_metrics(original: dict[str, float], reproduced: dict[str, float]) -> list[str]:
    return sorted(k for k in original.keys() & reproduced.keys() if k not in UNCOMPARED)


def side_by_side(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> tuple[str, bool]:
    """A plain-text table of both runs' metrics and whether all match within `tolerance`."""
    names = compared_metrics(original, reproduced)
    width = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{width}}  {'original':>12}  {'reproduced':>12}  {'difference':>11}"]
    worst = 0.0
    for name in names:
        a, b = original[name], reproduced[name]
        diff = b - a
        worst = max(worst, abs(diff))
        lines.append(f"{name:<{width}}  {a:>12.6g}  {b:>12.6g}  {diff:>11.2e}")
    return "\n".join(lines), bool(names) and worst <= tolerance


def reproduce(base: DictConfig, run_id: str, tolerance: float) -> bool:
    """Retrain `run_id`, log the new run, print the comparison; True when it matches."""
    from pipeline import progress
    from pipeline.data import prepare
    from pipeline.errors import SearchError
    from pipeline.quiet import quiet_after_import, silenced_stderr
    from pipeline.tracking import Tracker

    tracker = Tracker.from_config(base.tracking)
    tracker.connect()
    source = load_source(tracker, run_id)
    cfg = source.cfg
    cfg.tracking = base.tracking  # the store the run was found in, not the one it logged
    cfg.tuner.executions_per_trial = source.executions
    cfg.search.verbose = base.search.verbose
    data = prepare(cfg.data)
    if data.fingerprint != source.fingerprint:
        raise SearchError(
            f"data fingerprint differs: run {run_id} used {source.fingerprint[:12]}, the data "
            f"'{cfg.data.name}' gives {data.fingerprint[:12]} now (the file or its "
            "preprocessing changed); refusing to compare"
        )
    if data.vocab != source.vocab:
        raise SearchError(f"vocabulary differs from the one run {run_id}'s search logged")
    if not cfg.train.deterministic:
        progress.say(
            "note: the original run had train.deterministic=false; metrics may differ slightly"
        )
    with silenced_stderr(not cfg.search.verbose):
        import tensorflow  # noqa: F401

        from pipeline.attention_report import AttentionReporter, variant_name
        from pipeline.hypermodel import trial_settings
        from pipeline.model import build_model
        from pipeline.trial import make_deterministic, train_and_log
    quiet_after_import(cfg.search.verbose)
    make_deterministic(True)
    model_settings, train = trial_settings(cfg, source.values)
    train["seed"] = source.seed
    name = source.run.info.run_name
    progress.say(
        f"reproducing run {run_id} ({name}, {variant_name(model_settings)}, seed {source.seed}) "
        f"of search '{source.run.data.tags.get('search_id')}'"
    )
    tracker.experiment_id = source.run.info.experiment_id
    tags = {
        "kind": "reproduce",
        "reproduces": run_id,
        "source_search_id": source.run.data.tags.get("search_id", ""),
        "data_fingerprint": data.fingerprint,
        "seed": source.seed,
        "variant": variant_name(model_settings),
    }
    with tracker.run(f"reproduce-{name}", tags=tags) as run:
        tracker.log_params(source.values)
        tracker.log_dict(
            {
                "hyperparameters": source.values,
                "seed": source.seed,
                "executions_per_trial": source.executions,
                "data_fingerprint": data.fingerprint,
            },
            "trial.json",
        )
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        train_and_log(
            cfg,
            data,
            tracker,
            AttentionReporter(cfg.attention, data, tracker),
            lambda: build_model(
                model_settings,
                len(data.vocab),
                data.n_classes,
                learning_rate=train["learning_rate"],
                clipnorm=train["clipnorm"],
            ),
            train,
            f"reproduction of {name}",
        )
        new_id = run.info.run_id
    reproduced = tracker.get_run(new_id).data.metrics
    table, matches = side_by_side(source.run.data.metrics, reproduced, tolerance)
    progress.say()
    progress.say(table)
    progress.say()
    verdict = "match" if matches else "DIFFER"
    progress.say(
        f"{verdict}: metrics of {run_id} and its reproduction {new_id} (tolerance {tolerance:g})"
    )
    return matches


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

    from pipeline.cli import composed, guarded

    base = composed(args.overrides)

    def run() -> int:
        return 0 if reproduce(base, args.run_id, args.tolerance) else MISMATCH_EXIT

    return guarded(run, verbose=bool(base.search.verbose))


if __name__ == "__main__":
    sys.exit(main())
