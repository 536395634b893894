"""`train.jit_compile=auto` where XLA should pay: one long fit, compile included, with
`auto` and with `false` (op determinism off, as XLA needs), on synthetic data at a scale
users reach. Goal: >= 1.4x faster with auto, the same validation accuracy within noise.

Each fit runs in a process of its own, the modes alternated round by round: in one
process the second of two such fits ran 7-10% slower than the same fit run first (either
mode), which made the ratio depend on the order."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

GOAL = 1.4
RESULT = "xla-fit: "  # the line a child prints its result on


def overrides(args) -> list[str]:
    return [
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


def one_fit(args) -> dict:
    """The child: one fit in `args.modes[0]`, timed from building the model to the end of
    `fit`, with the heap frozen as a search freezes it (`pipeline.cli.frozen_heap`)."""
    import keras

    from pipeline.cli import frozen_heap
    from pipeline.config import compose_config
    from pipeline.data import prepare
    from pipeline.models.registry import variant_of
    from pipeline.search.space import build_trial_model, trial_settings
    from pipeline.training.evaluation import evaluate
    from pipeline.training.fit import fit

    (mode,) = args.modes
    cfg = compose_config(overrides(args))
    data = prepare(cfg.data)
    settings, train = trial_settings(cfg, {})
    train = {**train, "jit_compile": mode}
    lines: list[str] = []
    with frozen_heap():
        keras.utils.set_random_seed(0)
        started = time.perf_counter()
        model = build_trial_model(settings, train, len(data.vocab), data.n_classes)
        trims = variant_of(settings).trims_padding
        fit(model, data, train, trim_padding=trims, announce=lines.append)
        seconds = time.perf_counter() - started
        metrics, _ = evaluate(model, data, "val", train, trim_padding=trims, prefix="val_")
    return {
        "mode": mode,
        "seconds": seconds,
        "val_accuracy": metrics["val_accuracy"],
        "line": lines[0] if lines else f"xla: {mode}",
        "train_examples": len(data.y["train"]),
    }


def run_child(args, mode: str) -> dict:
    command = [
        sys.executable, "-m", "pipeline.bench", "xla", "--child", "--modes", mode,
        "--examples", str(args.examples), "--max-len", str(args.max_len),
        "--epochs", str(args.epochs), "--units", str(args.units),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"bench xla: the {mode} fit failed (exit {done.returncode}): {tail}")


def run(args) -> None:
    from pipeline.progress import say

    if args.child:
        print(RESULT + json.dumps(one_fit(args)), flush=True)
        return
    say(
        f"synthetic: {args.examples} examples, max_len {args.max_len}, {args.epochs} epochs, "
        f"units {args.units}, attention; each fit in its own process, {args.rounds} rounds"
    )
    seconds: dict[str, list[float]] = {mode: [] for mode in args.modes}
    for round_ in range(args.rounds):
        order = args.modes if round_ % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            result = run_child(args, mode)
            seconds[mode].append(result["seconds"])
            say(
                f"round {round_ + 1}, jit_compile={mode}: {result['seconds']:.1f} s, "
                f"val_accuracy {result['val_accuracy']:.4f}; {result['line']}"
            )
        if {"auto", "false"} <= set(args.modes):
            ratio = seconds["false"][-1] / seconds["auto"][-1]
            say(f"round {round_ + 1}: auto vs false {ratio:.2f}x ({' then '.join(order)})")
    if {"auto", "false"} <= set(args.modes) and args.rounds:
        ratio = statistics.median(seconds["false"]) / statistics.median(seconds["auto"])
        say(
            f"auto vs false: {ratio:.2f}x faster, median over {args.rounds} rounds "
            f"({statistics.median(seconds['auto']):.1f} vs "
            f"{statistics.median(seconds['false']):.1f} s; goal >= {GOAL}x)"
        )
