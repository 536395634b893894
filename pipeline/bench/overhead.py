"""Cost of the pipeline around training: bare `model.fit` vs one tracked trial.

Same data, model and epochs; alternated in one process. The tracked trial is timed
inside keras-tuner's run_trial (child run, per-epoch logging, validation metrics,
confusion figure, keras-tuner checkpoint, optional model logging). `--attention`
times only what the attention diagnostics add (heatmaps, occlusion, erasure, the
uniform-weights ablation: the trial's own `diagnostics_seconds`) against the trial's
fit, with and without faithfulness; `--set` passes config overrides (long texts:
`--set data.max_len=256 data.synthetic.min_tokens=128 data.synthetic.max_tokens=256`).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import keras
from omegaconf import OmegaConf

from pipeline.config import compose_config, to_plain, typed_data
from pipeline.data import prepare
from pipeline.models.registry import label_knobs, variant_of
from pipeline.progress import say
from pipeline.runtime.cli import frozen_heap
from pipeline.search.run import run_search
from pipeline.search.space import build_trial_model, trial_settings
from pipeline.tracking.store import open_tracker
from pipeline.training.fit import fit

GOAL = 1.05
ATTENTION_GOAL = 0.10  # diagnostics / fit on airline tweets with defaults (0.20 long texts)


def bare_fit(cfg, data) -> tuple[float, float]:
    model_settings, train = trial_settings(cfg, {})
    keras.backend.clear_session()
    keras.utils.set_random_seed(train.seed)
    start = time.perf_counter()
    model = build_trial_model(model_settings, train, len(data.vocab), data.n_classes)
    fit(model, data, train, trim_padding=variant_of(model_settings).trims_padding)
    return time.perf_counter() - start, 0.0


def tracked_trial(
    cfg,
    data,
    log_model: bool,
    attention: bool = True,
    system_metrics: bool = True,
    faithfulness: bool = True,
    parts: dict | None = None,
) -> tuple[float, float]:
    """(trial wall time, that minus the trial's own model.fit: what the pipeline adds);
    `parts` receives the trial's fit and diagnostics seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg = OmegaConf.merge(
            cfg,
            {
                "tracking": {
                    "uri": f"sqlite:///{tmp}/mlflow.db",
                    "artifact_root": f"{tmp}/a",
                    "log_model": log_model,
                    "system_metrics_s": cfg.tracking.system_metrics_s if system_metrics else 0,
                },
                "tuner": {"directory": f"{tmp}/tuner"},
                "search": {"evaluate_test": False},
                "attention": {"enabled": attention, "faithfulness": {"enabled": faithfulness}},
            },
        )
        tracker = open_tracker(run_cfg.tracking)
        with frozen_heap():
            outcome = run_search(run_cfg, data, tracker)
        row = outcome.trials.iloc[0]
        if parts is not None:
            parts.setdefault("fit", []).append(float(row["fit_seconds"]))
            parts.setdefault("diagnostics", []).append(float(row.get("diagnostics_seconds", 0)))
        return float(row["seconds"]), float(row["seconds"]) - float(row["fit_seconds"])


def attention_run(cfg, data, args) -> None:
    """What the final model's attention diagnostics cost next to its fit."""
    import contextlib
    import io

    parts: dict[str, dict] = {"heatmaps only": {}, "heatmaps + faithfulness": {}}
    modes = {
        "heatmaps only": lambda p: tracked_trial(cfg, data, False, True, False, False, p),
        "heatmaps + faithfulness": lambda p: tracked_trial(cfg, data, False, True, False, True, p),
    }
    for fn in modes.values():  # warm-up: first traces
        fn({})
    for _ in range(args.repeats):
        for m, fn in modes.items():
            with contextlib.redirect_stdout(io.StringIO()):
                fn(parts[m])
    lengths = (data.x["val"] != 0).sum(axis=1)
    f = cfg.attention.faithfulness
    say(
        f"\n{data.name}: {args.epochs} epochs, {len(data.y['train'])} training examples, "
        f"max_len {data.max_len}, median real length {int(statistics.median(lengths))}; "
        f"faithfulness on <= {f.max_examples} examples / {f.max_occlusions} occlusions; "
        f"{args.repeats} alternated repeats"
    )
    say(
        f"{'mode':<26}{'fit s':>8}{'diagnostics s':>15}{'share of fit':>14}{'per run':>18}"
        "   all runs (diagnostics/fit s)"
    )
    for m, p in parts.items():
        fit_s, diag = statistics.median(p["fit"]), statistics.median(p["diagnostics"])
        # Fit times of identical runs scatter by +-20% on this VM: the share is the summed
        # diagnostics over the summed fits, with the range of per-run shares next to it.
        share = sum(p["diagnostics"]) / sum(p["fit"])
        each = [d / t for d, t in zip(p["diagnostics"], p["fit"], strict=True)]
        runs = " ".join(f"{d:.2f}/{t:.1f}" for d, t in zip(p["diagnostics"], p["fit"], strict=True))
        say(
            f"{m:<26}{fit_s:>8.2f}{diag:>15.2f}{share:>13.1%}"
            f"{f'{min(each):.1%}-{max(each):.1%}':>18}   {runs}"
        )
    say(
        "diagnostics s: the trial's own timing of the final model's heatmaps, occlusion, "
        "erasure and uniform-weights ablation, logging included"
    )
    say(f"goal: <= {ATTENTION_GOAL:.0%} of fit on airline tweets, <= 20% at max_len 256")


def run(args) -> None:
    cfg = compose_config(
        [
            f"data={args.data}",
            f"train.epochs={args.epochs}",
            "train.early_stopping.enabled=false",
            "tuner.max_trials=1",
            *args.set,
        ]
    )
    # The variant of model.* fixed (its label knobs included): one trial, no search.
    fixed = {
        k: {"type": "fixed", "value": v}
        for k, v in to_plain(cfg.model).items()
        if k in label_knobs()
    }
    cfg.search_space = fixed
    data = prepare(typed_data(cfg.data))
    if args.attention:
        attention_run(cfg, data, args)
        return
    modes = {
        "bare model.fit": lambda: bare_fit(cfg, data),
        "trial, no system metrics": lambda: tracked_trial(cfg, data, False, False, False),
        "trial, plots off, model off": lambda: tracked_trial(cfg, data, False, False),
        "trial, plots on, model off": lambda: tracked_trial(cfg, data, False),
        "trial, plots on, model on": lambda: tracked_trial(cfg, data, True),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    added: dict[str, list[float]] = {m: [] for m in modes}
    for m in modes:  # warm-up round: first graph traces, first DB creation
        modes[m]()
    import contextlib
    import io

    for _ in range(args.repeats):
        for m, fn in modes.items():
            with contextlib.redirect_stdout(io.StringIO()):
                total, pipeline = fn()
            times[m].append(total)
            added[m].append(pipeline)
    base = statistics.median(times["bare model.fit"])
    say(
        f"\n{data.name}: {args.epochs} epochs, {len(data.y['train'])} training examples, "
        f"{args.repeats} alternated repeats"
    )
    say(
        f"{'mode':<30}{'median s':>9}{'ratio':>8}{'pipeline s':>12}{'bare+pipeline':>15}"
        "   all runs (s)"
    )
    for m, ts in times.items():
        med, extra = statistics.median(ts), statistics.median(added[m])
        runs = " ".join(f"{t:.2f}" for t in ts)
        say(
            f"{m:<30}{med:>9.2f}{med / base:>7.2f}x{extra:>12.2f}{(base + extra) / base:>14.2f}x"
            f"   {runs}"
        )
    say(
        "pipeline s: median of (trial wall time - the trial's own model.fit), i.e. what "
        "tracking, figures and checkpoints add; bare+pipeline: that over the bare fit"
    )
    say(f"goal: <= {GOAL}x with model logging off")
