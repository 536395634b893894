"""Kept models (pipeline/training/compiled.py): a later trial of the same architecture
trains on an earlier trial's model, with its traced steps, exactly as a new model would."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.data import prepare
from pipeline.models.build import build_model
from pipeline.search.space import trial_settings
from pipeline.training.compiled import KeptModels, architecture_key, start_trial
from pipeline.training.fit import enable_determinism, fit
from pipeline.training.sharded import shards_in_use


def quick(*overrides: str):
    cfg = compose_config(["+experiment=quick", "train.epochs=2", *overrides])
    data = prepare(typed_data(cfg.data))
    settings, train = trial_settings(cfg, {})
    return data, settings, train


def new_model(data, settings, seed: int, learning_rate: float = 0.01) -> keras.Model:
    start_trial(seed)
    return build_model(settings, len(data.vocab), data.n_classes, learning_rate, 1.0, 8)


def test_a_kept_model_trains_as_a_new_one_would_without_tracing_again():
    """Dropout on (its seed state is part of the starting state), another seed and
    learning rate: the kept model's curves equal a new model's bit for bit, and its train
    step is the one traced before."""
    enable_determinism(True)
    data, settings, train = quick("model.pooling=attention", "model.dropout=0.2")
    kept = KeptModels()
    first = new_model(data, settings, seed=1)
    fit(first, data, train, trim_padding=True)
    traced = first.train_function
    kept.give_back(first, capacity=2)

    reference = new_model(data, settings, seed=2, learning_rate=0.003)
    expected = fit(reference, data, train, trim_padding=True).history

    reused = kept.take(new_model(data, settings, seed=2, learning_rate=0.003), capacity=2)
    assert reused is first and kept.hits == 1 and len(kept) == 0
    got = fit(reused, data, train, trim_padding=True).history
    assert reused.train_function is traced
    assert got == expected  # every epoch's loss and metrics, exactly
    assert float(reused.optimizer.learning_rate.numpy()) == pytest.approx(0.003)
    for a, b in zip(reused.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_another_architecture_gets_its_own_model():
    """Any config difference (here the dropout rate, a constant of the traced step) is
    another architecture; the least recently returned model is dropped past capacity."""
    data, settings, _ = quick("model.pooling=mean")
    kept = KeptModels()
    a = new_model(data, settings, seed=0)
    kept.give_back(a, capacity=1)
    other = {**settings, "dropout": 0.1}
    fresh = build_model(other, len(data.vocab), data.n_classes, 0.01, 1.0, 8)
    assert architecture_key(fresh) != architecture_key(a)
    assert kept.take(fresh, capacity=1) is fresh and len(kept) == 1
    kept.give_back(fresh, capacity=1)  # a is dropped: capacity 1
    assert kept.take(new_model(data, settings, seed=0), capacity=1) is not a
    off = new_model(data, settings, seed=0)
    assert kept.take(off, capacity=0) is off and len(kept) == 1  # 0: nothing kept or taken
    assert kept.hits == 0


def test_start_trial_seeds_as_clear_session_and_set_random_seed_do():
    """The same layer names, the same starting weights and the same TensorFlow op seeds
    as Keras' own clear_session + set_random_seed, without clearing the kernel cache."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import random_seed

    data, settings, _ = quick("model.pooling=attention", "model.dropout=0.1")

    def built(reset):
        reset()
        model = build_model(settings, len(data.vocab), data.n_classes, 0.01, 1.0, 8)
        return model, random_seed.get_seed(None), keras.random.uniform((3,)).numpy()

    def keras_way():
        keras.backend.clear_session()
        keras.utils.set_random_seed(5)

    ours, theirs = built(lambda: start_trial(5)), built(keras_way)
    assert [v.path for v in ours[0].variables] == [v.path for v in theirs[0].variables]
    for a, b in zip(ours[0].variables, theirs[0].variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ours[1] == theirs[1] and context.global_seed() == 5
    np.testing.assert_array_equal(ours[2], theirs[2])


def test_a_kept_model_traced_without_xla_is_retraced_with_it():
    """XLA is a property of the traced step: a kept model fitted again the other way
    traces anew (and says it compiled with XLA); fitted again with XLA, it compiles
    nothing and auto says so."""
    enable_determinism(False)
    try:
        data, settings, train = quick("model.pooling=mean", "train.epochs=1")
        kept = KeptModels()
        model = new_model(data, settings, seed=0)
        fit(model, data, replace(train, jit_compile="false"), trim_padding=True)
        traced = model.train_function
        kept.give_back(model, capacity=1)
        again = kept.take(new_model(data, settings, seed=0), capacity=1)
        xla = replace(train, jit_compile="true", deterministic=False)
        history = fit(again, data, xla, trim_padding=True)
        assert again is model and history.xla.on
        # Keras' XLA step, or steps over XLA blocks where TensorFlow has the cores
        assert again.jit_compile == (history.xla.shards == 1 == shards_in_use(again))
        assert again.train_function is not traced
        assert history.xla.compiled == 0 and history.xla.shapes > 0
        # kept again: its XLA programs are reused, auto counts no shape to compile
        kept.give_back(again, capacity=1)
        third = kept.take(new_model(data, settings, seed=1), capacity=1)
        compiled = third.train_function
        history = fit(third, data, replace(xla, jit_compile="auto"), trim_padding=True)
        assert third is model and third.train_function is compiled
        assert history.xla.on and history.xla.shapes == 0 and history.xla.compiled > 0
    finally:
        enable_determinism(True)


@pytest.mark.e2e
def test_a_search_s_kept_models_reproduce_on_new_ones(store):
    """A seed-replicate search trains its second seed on the first seed's kept model; that
    run reproduces on a new model (search.keep_compiled=0: Keras' clear_session, a new
    trace): every logged metric equal, the diagnostics' included."""
    from pipeline.search import reproduce_run, run_search
    from pipeline.training.compiled import KEPT

    hits = KEPT.hits
    run_search(
        store.compose(
            "+experiment=quick",
            "tuner.max_trials=1",
            "search.seeds=[0,1]",
            "model.dropout=0.1",
            "~search_space.dropout",
            "tracking.log_model=false",
        )
    )
    assert KEPT.hits >= hits + 2  # the second seed's trial, the test evaluation
    second = next(r for r in store.runs() if r.data.tags.get("seed") == "1")
    again = reproduce_run(store.compose("search.keep_compiled=0"), second.info.run_id)
    assert again.matches, again.table
