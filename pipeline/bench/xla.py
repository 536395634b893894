"""`train.jit_compile=auto` where XLA should pay: one long fit, compile included, with
`auto` and with `false` (op determinism off, as XLA needs), on synthetic data at a scale
users reach. Goal: >= 1.4x faster with auto, the same validation accuracy within noise.
`--xla-lstm bptt keras` also runs the XLA modes with each recurrence (`model.xla_lstm`).

Each fit runs in a process of its own, the modes alternated round by round: in one
process the second of two such fits ran 7-10% slower than the same fit run first (either
mode), which made the ratio depend on the order."""

from __future__ import annotations

import dataclasses
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
        f"model.xla_lstm={args.xla_lstm[0]}",
    ]


def one_fit(args) -> dict:
    """The child: one fit in `args.modes[0]` (with `args.xla_lstm[0]`), timed from
    building the model to the end of `fit`, with the heap frozen as a search freezes it
    (`pipeline.runtime.cli.frozen_heap`)."""
    import keras

    from pipeline.config import compose_config, typed_data
    from pipeline.data import prepare
    from pipeline.models.registry import variant_of
    from pipeline.runtime.cli import frozen_heap
    from pipeline.search.space import build_trial_model, trial_settings
    from pipeline.training.evaluation import evaluate
    from pipeline.training.fit import fit

    (mode,) = args.modes
    cfg = compose_config(overrides(args))
    data = prepare(typed_data(cfg.data))
    settings, train = trial_settings(cfg, {})
    train = dataclasses.replace(train, jit_compile=mode)
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
        "line": lines[0] if lines else f"xla: off (train.jit_compile={mode})",
    }


def run_child(args, mode: str, xla_lstm: str) -> dict:
    command = [
        sys.executable, "-m", "pipeline.bench", "xla", "--child", "--modes", mode,
        "--xla-lstm", xla_lstm, "--examples", str(args.examples),
        "--max-len", str(args.max_len), "--epochs", str(args.epochs), "--units", str(args.units),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"bench xla: the {mode} fit failed (exit {done.returncode}): {tail}")


def fits(modes: list[str], recurrences: list[str]) -> list[tuple[str, str]]:
    """(mode, xla_lstm) of every fit a round runs: `false` once (no XLA, the recurrence
    does not apply), the XLA modes with each recurrence."""
    return [
        (mode, recurrence)
        for mode in modes
        for recurrence in (recurrences[:1] if mode == "false" else recurrences)
    ]


def label(mode: str, recurrence: str, recurrences: list[str]) -> str:
    many = len(recurrences) > 1 and mode != "false"
    return f"jit_compile={mode}" + (f", xla_lstm={recurrence}" if many else "")


def run(args) -> None:
    from pipeline.progress import say

    if args.child:
        print(RESULT + json.dumps(one_fit(args)), flush=True)
        return
    say(
        f"synthetic: {args.examples} examples, max_len {args.max_len}, {args.epochs} epochs, "
        f"units {args.units}, attention; each fit in its own process, {args.rounds} rounds"
    )
    plan = fits(args.modes, args.xla_lstm)
    seconds: dict[tuple[str, str], list[float]] = {fit: [] for fit in plan}
    for round_ in range(args.rounds):
        for mode, recurrence in plan if round_ % 2 == 0 else list(reversed(plan)):
            result = run_child(args, mode, recurrence)
            seconds[mode, recurrence].append(result["seconds"])
            say(
                f"round {round_ + 1}, {label(mode, recurrence, args.xla_lstm)}: "
                f"{result['seconds']:.1f} s, val_accuracy {result['val_accuracy']:.4f}; "
                f"{result['line']}"
            )
    if not args.rounds:
        return
    median = {fit: statistics.median(times) for fit, times in seconds.items()}
    first = args.xla_lstm[0]
    pairs = []
    if {"auto", "false"} <= set(args.modes):
        pairs += [
            (("false", first), ("auto", r), f"auto vs false (xla_lstm={r})") for r in args.xla_lstm
        ]
    for mode in (m for m in args.modes if m != "false"):
        pairs += [
            ((mode, "keras"), (mode, r), f"{mode}: xla_lstm={r} vs keras")
            for r in args.xla_lstm
            if r != "keras" and "keras" in args.xla_lstm
        ]
    for slow, fast, name in pairs:
        per_round = [a / b for a, b in zip(seconds[slow], seconds[fast], strict=True)]
        say(
            f"{name}: {median[slow] / median[fast]:.2f}x faster, median over {args.rounds} "
            f"rounds ({median[fast]:.1f} vs {median[slow]:.1f} s; each round "
            f"{', '.join(f'{x:.2f}x' for x in per_round)})"
            + (f"; goal >= {GOAL}x" if name.startswith("auto vs false") else "")
        )
