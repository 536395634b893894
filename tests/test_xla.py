"""`train.jit_compile` (pipeline/training/xla.py): auto decides from the rule, op
determinism blocks XLA (Keras would drop it silently), an XLA trial says so, is tagged
and reproduces."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.config import compose_config
from pipeline.config.schema import XlaConfig
from pipeline.config.validation import ConfigError, validate
from pipeline.training.batching import BucketedBatches
from pipeline.training.xla import choose_xla, jit_mode

XLA = XlaConfig(compile_s_per_shape=1.5, speedup=1.7, tokens_per_s=128_000, shards="auto")


def plans(n: int, max_len: int = 40, batch: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, max_len), dtype=np.int32)
    for row, length in enumerate(rng.integers(3, max_len, n)):
        x[row, :length] = 5
    train = BucketedBatches(x, np.zeros(n, dtype=np.int32), batch, 4)
    val = BucketedBatches(x[: n // 5], None, batch, 4)
    return train, val


def test_auto_is_off_for_a_tiny_trial_and_on_for_a_long_one():
    tiny = choose_xla("auto", *plans(300), epochs=1, xla=XLA)
    assert not tiny.on and "auto" in tiny.line() and "<=" in tiny.line()
    long = choose_xla("auto", *plans(100_000), epochs=5, xla=XLA)
    assert long.on and long.saving_s > long.compile_s and ">" in long.line()
    # what it weighs: shapes of train and validation batches, the samples it will see
    assert 4 <= long.shapes <= 16
    train, val = plans(100_000)
    steps = sum(len(i) * w for w, i in train.batches) + sum(len(i) * w for w, i in val.batches) / 3
    assert long.fit_s == pytest.approx(5 * steps / 128_000)
    # the train and the test step compile apart: a shape both splits have counts twice
    per_plan = [len({(len(i), w) for w, i in plan.batches}) for plan in (train, val)]
    assert long.shapes == sum(per_plan)


def test_explicit_modes_and_op_determinism():
    assert choose_xla("true", *plans(300), epochs=1, xla=XLA).on
    assert not choose_xla("false", *plans(100_000), epochs=5, xla=XLA).on
    blocked = choose_xla("auto", *plans(100_000), epochs=5, xla=XLA, deterministic=True)
    assert not blocked.on and blocked.blocked and "deterministic" in blocked.line()
    assert jit_mode(True) == "true" and jit_mode("Auto") == "auto"
    with pytest.raises(ValueError, match="jit_compile"):
        jit_mode("sometimes")


def test_shapes_a_kept_model_compiled_already_cost_nothing():
    """A kept model's XLA programs (training.compiled) are reused: auto weighs only the
    shapes not compiled yet, so a fit too short to pay for compiling may still use XLA."""
    from pipeline.training.xla import shape_keys

    train, val = plans(3000)
    fresh = choose_xla("auto", train, val, epochs=1, xla=XLA)
    assert not fresh.on and fresh.compiled == 0 and fresh.shapes > 0
    keys = shape_keys(train, val)
    assert len(keys) == fresh.shapes
    kept = choose_xla("auto", train, val, epochs=1, xla=XLA, compiled=keys)
    assert kept.on and kept.shapes == 0 and kept.compile_s == 0
    assert kept.compiled == fresh.shapes and "compiled by an earlier trial" in kept.line()
    some = frozenset(sorted(keys)[:2])
    part = choose_xla("auto", train, val, epochs=1, xla=XLA, compiled=some)
    assert part.shapes == fresh.shapes - 2 and part.compiled == 2


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.jit_compile=sometimes"], "train.jit_compile"),
        (["train.jit_compile=true"], "needs train.deterministic=false"),
        (["train.xla.speedup=0"], "train.xla"),
    ],
)
def test_bad_xla_settings_are_refused_naming_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(compose_config(overrides))


def test_an_xla_trial_says_so_is_tagged_and_reproduces(store, capsys):
    from pipeline.search.reproduction import reproduce_run
    from pipeline.search.run import run_search
    from pipeline.training.fit import enable_determinism, op_determinism_on

    was_on = op_determinism_on()
    try:
        run_search(
            store.compose(
                "+experiment=quick",
                "attention.enabled=false",
                "tracking.log_model=false",
                "tuner.max_trials=1",
                "search_space.pooling.values=[mean]",
                "~search_space.attention_activation",
                "~search_space.attention_normalizer",
                "train.deterministic=false",
                "train.jit_compile=true",
                "train.bucketing.enabled=false",  # one batch width: fewer programs to compile
                "search.name=xla",
            )
        )
        printed = capsys.readouterr().out  # blocks at once where TensorFlow has the cores
        said = re.search(
            r"xla: on(, (\d) blocks a batch at once)? \(train.jit_compile=true\)", printed
        )
        assert said, printed
        (trial,) = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
        assert trial.data.tags["xla"] == "on"
        assert trial.data.tags["xla_shards"] == (said.group(2) or "1")
        again = reproduce_run(store.compose(), trial.info.run_id)
        assert again.matches, again.table
        assert "trained under XLA" in capsys.readouterr().out
    finally:
        enable_determinism(was_on)
