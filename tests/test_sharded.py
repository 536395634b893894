"""XLA steps over blocks of each batch (pipeline/training/sharded.py): the same training
as Keras' own XLA step, every batch size (odd, smaller than the blocks), dropout models
kept whole under `auto`, bad settings refused."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.config.validation import ConfigError, validate
from pipeline.data import prepare
from pipeline.search.space import build_trial_model, trial_settings
from pipeline.training.fit import enable_determinism, fit, op_determinism_on
from pipeline.training.sharded import shards_for, shards_in_use

SMALL = [
    "data.synthetic.n_examples=160",
    "data.max_len=30",  # a shorter recurrence: XLA compiles it faster
    "train.epochs=2",
    "train.batch_size=16",
    "train.early_stopping.enabled=false",
    "train.deterministic=false",
    "train.jit_compile=true",
    "model.units=8",
    "model.embedding_dim=8",
    "model.pooling=attention",
    "train.bucketing.enabled=false",  # one batch width: fewer programs to compile
]


@pytest.fixture(scope="module")
def small():
    cfg = compose_config(SMALL)
    return cfg, prepare(typed_data(cfg.data))


@pytest.fixture
def no_determinism():
    was_on = op_determinism_on()
    enable_determinism(False)
    yield
    enable_determinism(was_on)


def trained(cfg, data, shards: int, **model):
    settings, train = trial_settings(cfg, {})
    settings.update(model)
    train = replace(train, xla=replace(train.xla, shards=shards))
    keras.utils.set_random_seed(0)
    net = build_trial_model(settings, train, len(data.vocab), data.n_classes)
    lines: list[str] = []
    history = fit(net, data, train, trim_padding=True, announce=lines.append)
    return net, history, lines


def test_blocks_train_as_keras_xla_step_does(small, no_determinism):
    """Three blocks against Keras' own XLA step: the same losses, metrics and weights
    after two epochs of 16-row batches (blocks of 5, 5 and 6 rows: the mean is weighted
    by rows)."""
    cfg, data = small
    whole, whole_history, whole_lines = trained(cfg, data, 1)
    assert shards_in_use(whole) == 1 and whole.jit_compile
    assert whole_lines == ["xla: on (train.jit_compile=true)"]
    for shards in (3,):
        blocked, history, lines = trained(cfg, data, shards)
        assert shards_in_use(blocked) == shards and not blocked.jit_compile
        assert lines == [f"xla: on, {shards} blocks a batch at once (train.jit_compile=true)"]
        for key, values in whole_history.history.items():
            np.testing.assert_allclose(history.history[key], values, rtol=2e-4, atol=2e-5)
        for ours, theirs in zip(blocked.get_weights(), whole.get_weights(), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_a_batch_smaller_than_the_blocks_scores_as_a_whole(small, no_determinism):
    """One row split into two blocks leaves one empty: its NaN mean weighs nothing."""
    cfg, data = small
    blocked, _, _ = trained(cfg, data, 2)
    row = data.x["val"][:1]
    expected = keras.losses.sparse_categorical_crossentropy(
        data.y["val"][:1], blocked.predict(row, verbose=0)
    )
    loss, accuracy, _ = blocked.evaluate(row, data.y["val"][:1], batch_size=1, verbose=0)
    assert np.isfinite(loss) and loss == pytest.approx(float(expected[0]), rel=1e-4)
    assert accuracy in (0.0, 1.0)
    blocked.train_on_batch(row, data.y["val"][:1])
    assert all(np.all(np.isfinite(w)) for w in blocked.get_weights())


def test_a_setting_change_retraces_and_auto_is_the_cores(small, no_determinism):
    from pipeline.training.compiled import set_jit
    from pipeline.training.sharded import available_cores

    assert shards_for("auto") == available_cores() >= 1
    assert shards_for(3) == 3 and shards_for("2") == 2
    cfg, data = small
    settings, train = trial_settings(cfg, {})
    net = build_trial_model(settings, train, len(data.vocab), data.n_classes)
    # A kept model (training.compiled) fitted another way drops its traced steps.
    set_jit(net, True, 2)
    net.make_train_function()
    assert net.train_function is not None
    set_jit(net, True, 1)
    assert net.train_function is None and shards_in_use(net) == 1 and net.jit_compile
    assert "train_step" not in net.__dict__  # Keras' own step again


class LastOutputs(keras.metrics.Metric):
    """Keeps the training outputs of the last batch (what the blocks computed)."""

    def __init__(self, shape, **kwargs):
        super().__init__(name="last_outputs", **kwargs)
        self.kept = self.add_variable(shape=shape, initializer="zeros", name="kept")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.kept.assign(y_pred)

    def result(self):
        return keras.ops.sum(self.kept)


def test_dropout_blocks_draw_their_own_masks_and_advance_the_seed_once(no_determinism):
    """Each block draws its own mask (no two blocks share one), the same masks again from
    the same seed, and the seed state ends where Keras' own step leaves it."""
    from pipeline.models.dropout import PhiloxDropout
    from pipeline.training.compiled import set_jit

    def model():
        keras.utils.set_random_seed(0)
        net = keras.Sequential(
            [
                keras.Input((64,)),
                PhiloxDropout(0.5, seed=3),
                keras.layers.Dense(64, use_bias=False, kernel_initializer="identity"),
            ]
        )
        outputs = LastOutputs((4, 64))
        net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics=[outputs])
        return net, outputs

    x, y = np.ones((4, 64), "float32"), np.zeros((4, 64), "float32")
    runs = []
    for shards in (2, 2, 1):
        net, outputs = model()
        set_jit(net, True, shards)
        before = net.layers[0].seed_generator.state.numpy().copy()
        net.train_on_batch(x, y)
        runs.append((outputs.kept.numpy(), net.layers[0].seed_generator.state.numpy()))
        np.testing.assert_array_equal(runs[-1][1], before + [0, 1])  # one draw, as Keras
    kept = runs[0][0]
    assert set(np.unique(kept)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / 0.5
    assert not np.array_equal(kept[0], kept[2]) and not np.array_equal(kept[1], kept[3])
    np.testing.assert_array_equal(runs[1][0], kept)  # the same seed, the same masks


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_shard_settings_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="train.xla.shards"):
        validate(compose_config([f"train.xla.shards={value}"]))


@pytest.mark.parametrize("jit", [False, True])
def test_philox_dropout_draws_keras_dropout_masks(jit):
    """pipeline/models/dropout.py: the same bits as Keras' Dropout from the same seed,
    call after call, with XLA and without; the model's embedding dropout is it."""
    import tensorflow as tf

    from pipeline.models.build import build_model
    from pipeline.models.dropout import PhiloxDropout

    x = tf.random.stateless_normal((16, 40, 8), seed=[1, 2])
    ours, theirs = PhiloxDropout(0.3, seed=7), keras.layers.Dropout(0.3, seed=7)
    draw = [
        tf.function(lambda x, d=d: d(x, training=True), jit_compile=jit) for d in (ours, theirs)
    ]
    for _ in range(3):  # the seed generators advance alike
        mine, keras_own = (f(x).numpy() for f in draw)
        np.testing.assert_array_equal(mine, keras_own)
        assert 0.2 < (mine == 0).mean() < 0.4
    np.testing.assert_array_equal(ours(x, training=False), x)

    settings, _ = trial_settings(compose_config(["model.dropout=0.2"]), {})
    layer = build_model(settings, 50, 3, learning_rate=0.01).get_layer("embedding_dropout")
    assert type(layer) is PhiloxDropout
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is PhiloxDropout and again.rate == 0.2
