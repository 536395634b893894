"""`train.jit_compile=auto` where XLA should pay: one long fit, compile included, with
`auto` and with `false`, one after the other in this process (op determinism off, as
XLA needs), on synthetic data at a scale users reach. Goal: >= 1.4x faster with auto,
the same validation accuracy within noise."""

from __future__ import annotations

import time

import keras

from pipeline.config import compose_config
from pipeline.data import prepare
from pipeline.models.registry import variant_of
from pipeline.progress import say
from pipeline.search.space import build_trial_model, trial_settings
from pipeline.training.evaluation import evaluate
from pipeline.training.fit import fit

GOAL = 1.4


def one_fit(cfg, data, mode: str) -> tuple[float, float, str]:
    settings, train = trial_settings(cfg, {})
    train = {**train, "jit_compile": mode}
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    lines: list[str] = []
    started = time.perf_counter()
    model = build_trial_model(settings, train, len(data.vocab), data.n_classes)
    trims = variant_of(settings).trims_padding
    fit(model, data, train, trim_padding=trims, announce=lines.append)
    seconds = time.perf_counter() - started
    metrics, _ = evaluate(model, data, "val", train, trim_padding=trims, prefix="val_")
    return seconds, metrics["val_accuracy"], lines[0] if lines else f"xla: {mode}"


def run(args) -> None:
    cfg = compose_config(
        [
            f"data.synthetic.n_examples={args.examples}",
            f"data.max_len={args.max_len}",
            f"data.synthetic.max_tokens={args.max_len}",
            f"train.epochs={args.epochs}",
            "train.early_stopping.enabled=false",
            "train.deterministic=false",
            f"model.units={args.units}",
            "model.pooling=attention",
            "data.audit.near_duplicates=false",
        ]
    )
    data = prepare(cfg.data)
    say(
        f"synthetic: {len(data.y['train'])} training examples, max_len {data.max_len}, "
        f"{args.epochs} epochs, units {args.units}, attention"
    )
    results = {}
    for mode in args.modes:
        results[mode] = one_fit(cfg, data, mode)
        seconds, acc, line = results[mode]
        say(f"jit_compile={mode}: {seconds:.1f} s, val_accuracy {acc:.4f}; {line}")
    if "auto" in results and "false" in results:
        ratio = results["false"][0] / results["auto"][0]
        say(f"auto vs false: {ratio:.2f}x faster (goal >= {GOAL}x)")
