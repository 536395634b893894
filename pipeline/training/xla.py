"""Whether a trial's fit runs under XLA (`train.jit_compile: auto | true | false`).

XLA compiles one program per distinct batch shape (batch size x bucket width) of the
training and validation batches, so it pays on long trials and loses on short ones.
`auto` weighs, before the fit, the time it would save (the fit estimated from the token
steps it will run: rows x bucket width of every batch, a validation pass counted at a
third, at `tokens_per_s`; times 1 - 1/speedup) against what compiling the shapes costs
(`train.xla`, measured on this machine); the trial line says what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config.schema import JIT_MODES, XlaConfig


def jit_mode(value: Any) -> str:
    """`train.jit_compile` as one of JIT_MODES (YAML reads true/false as booleans)."""
    text = str(value).strip().lower()
    if text not in JIT_MODES:
        raise ValueError(f"train.jit_compile: '{value}' is not one of auto, true, false")
    return text


@dataclass(frozen=True)
class XlaChoice:
    on: bool
    mode: str  # auto | true | false
    shapes: int  # distinct batch shapes the fit would compile
    fit_s: float  # estimated fit without XLA
    saving_s: float  # estimated time XLA saves on it
    compile_s: float  # estimated compile cost
    blocked: bool = False  # op determinism on: TensorFlow runs no XLA under it
    compiled: int = 0  # shapes a kept model (training.compiled) has compiled already
    shards: int = 1  # XLA blocks of each batch run at once (training.sharded)

    def line(self) -> str:
        state = "on" if self.on else "off"
        if self.on and self.shards > 1:
            state = f"on, {self.shards} blocks a batch at once"
        if self.blocked:
            return (
                f"xla: off (train.deterministic=true: TensorFlow's op determinism excludes "
                f"XLA; auto would save ~{self.saving_s:.0f} s against ~{self.compile_s:.0f} s "
                "compiling)"
            )
        if self.mode != "auto":
            return f"xla: {state} (train.jit_compile={self.mode})"
        verb = ">" if self.on else "<="
        kept = f", {self.compiled} compiled by an earlier trial" if self.compiled else ""
        return (
            f"xla: {state} (auto: saves ~{self.saving_s:.0f} s of a ~{self.fit_s:.0f} s fit "
            f"{verb} ~{self.compile_s:.0f} s compiling {self.shapes} batch shapes{kept})"
        )


def token_steps(plan) -> int:
    """LSTM steps an epoch over `plan` runs: rows x (trimmed) width of every batch."""
    return int(sum(len(idx) * int(width) for width, idx in plan.batches))


VALIDATION_SHARE = 1 / 3  # a forward pass costs about a third of a train step


def shape_keys(train_plan, val_plan) -> frozenset[tuple[str, int, int]]:
    """(step, rows, width) of every batch of the two BucketedBatches plans: one XLA program
    each (the train and the test step are compiled apart, so a shape both splits share
    is two programs)."""
    return frozenset(
        (step, len(idx), int(width))
        for step, plan in (("train", train_plan), ("test", val_plan))
        for width, idx in plan.batches
    )


def choose_xla(
    mode: str,
    train_plan,
    val_plan,
    epochs: int,
    xla: XlaConfig,
    deterministic: bool = False,
    compiled: frozenset = frozenset(),
) -> XlaChoice:
    """The decision for one fit; `auto` from the estimate above (no timing here). Keras
    silently drops XLA when TensorFlow's op determinism is on (`train.deterministic`),
    so `auto` is off there, and says what XLA would have saved when it would pay.
    `compiled`: the shapes (`shape_keys`) the model's XLA steps hold already (a kept
    model, `training.compiled`), which cost nothing to compile again."""
    mode = jit_mode(mode)
    if mode == "false":
        return XlaChoice(False, mode, 0, 0.0, 0.0, 0.0)
    keys = shape_keys(train_plan, val_plan)
    reused = len(keys & compiled)
    shapes = len(keys) - reused
    steps = epochs * (token_steps(train_plan) + VALIDATION_SHARE * token_steps(val_plan))
    fit_s = steps / float(xla.tokens_per_s)
    saving_s = fit_s * (1.0 - 1.0 / float(xla.speedup))
    compile_s = shapes * float(xla.compile_s_per_shape)
    pays = saving_s > compile_s
    if deterministic:
        return XlaChoice(False, mode, shapes, fit_s, saving_s, compile_s, blocked=pays)
    on = mode == "true" or (mode == "auto" and pays)
    return XlaChoice(on, mode, shapes, fit_s, saving_s, compile_s, compiled=reused)
