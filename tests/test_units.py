"""Small pure functions: metrics, redaction, error lines, search-space declaration, batching."""

from __future__ import annotations

import keras_tuner as kt
import numpy as np
import pytest

from pipeline.config import compose_config, search_space_dims
from pipeline.errors import one_line
from pipeline.models.registry import POOLINGS, knob_options
from pipeline.search.space import active_values, declare_space, trial_settings
from pipeline.tracking import redact
from pipeline.training.batching import BucketedBatches, bucket_widths
from pipeline.training.evaluation import classification_metrics, confusion_matrix, macro_f1


def test_confusion_and_macro_f1_against_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per-class F1: 0.5, 0.8, 0.6667
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_classification_metrics_loss_is_cross_entropy():
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    m = classification_metrics(probs, np.array([0, 1]), "val_")
    assert m["val_loss"] == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
    assert m["val_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://alice:s3cret@mlflow.example:5000", "http://***@mlflow.example:5000"),
        ("postgresql://u:p@db/mlflow", "postgresql://***@db/mlflow"),
        ("https://host/api?token=abc123&x=1", "https://host/api?token=***&x=1"),
        ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
    ],
)
def test_redact_hides_credentials(raw, expected):
    assert redact(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://mlflow:s3cret@db:5432/runs", "postgresql://mlflow@db:5432/runs"),
        ("postgresql://mlflow@db/runs", "postgresql://mlflow@db/runs"),
        ("http://alice:pw@mlflow.example:5000", "http://alice@mlflow.example:5000"),
        ("sqlite:////shared/mlflow.db", "sqlite:////shared/mlflow.db"),
    ],
)
def test_a_uri_without_its_password_keeps_the_user_who_signs_in(raw, expected):
    from pipeline.runtime.redaction import without_password

    assert without_password(raw) == expected


def test_one_line_digs_the_real_error_out_of_tensorflow_wrappers():
    err = RuntimeError("Graph execution error:\n\nDetected at node x\nTypeError: bad shape (3,)\n")
    assert one_line(err) == "TypeError: bad shape (3,)"
    assert one_line(ValueError("plain\nmore")) == "plain"
    assert one_line(ValueError("")) == "ValueError"


def declared(*overrides):
    cfg = compose_config(list(overrides))
    hp = kt.HyperParameters()
    declare_space(hp, search_space_dims(cfg.search_space))
    return cfg, hp


def test_conditional_activation_only_active_for_attention():
    cfg, hp = declared()
    hp.values["pooling"] = "mean"
    assert "attention_activation" not in active_values(hp)
    hp.values["pooling"] = "attention"
    assert "attention_activation" in active_values(hp)
    model, train = trial_settings(cfg, {"pooling": "max", "units": 64, "learning_rate": 0.01})
    assert model["pooling"] == "max" and model["units"] == 64 and train.learning_rate == 0.01


def test_every_registered_pooling_and_activation_is_in_the_default_space():
    _, hp = declared()
    names = {p.name: p for p in hp.space}
    assert set(names["pooling"].values) == set(POOLINGS)
    assert set(names["attention_activation"].values) == set(knob_options()["attention_activation"])


def padded_tokens(rng, n: int, width: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` right-padded token rows of random lengths 1..width (ids 2..vocab-1), and the lengths."""
    lengths = rng.integers(1, width + 1, size=n)
    x = np.zeros((n, width), dtype=np.int32)
    for i, length in enumerate(lengths):
        x[i, :length] = rng.integers(2, vocab, size=length)
    return x, lengths


def test_bucketed_batches_trim_padding_and_cover_every_example_once():
    rng = np.random.default_rng(0)
    x, lengths = padded_tokens(rng, 300, 50, vocab=100)
    y = rng.integers(0, 3, size=300).astype(np.int32)
    batches = BucketedBatches(x, y, batch_size=32, n_buckets=4, shuffle=True, seed=1)
    seen = []
    widths = set()
    for xb, _yb in batches:
        widths.add(xb.shape[1])
        assert np.all(
            (xb != 0).sum(axis=1) == lengths[batches.order[len(seen) : len(seen) + len(xb)]]
        )
        seen.extend(range(len(xb)))
    assert sorted(batches.order.tolist()) == list(range(300))
    assert len(widths) <= 4 and max(widths) == lengths.max()
    padded = sum(xb.size for xb, _ in batches) / x.size
    assert padded < 0.75
    assert list(bucket_widths(np.array([3, 3, 3]), 4, 10)) == [3]
    off = BucketedBatches(x, y, batch_size=32, enabled=False)
    assert {xb.shape[1] for xb, _ in off} == {50}


def test_pooled_remainders_bound_the_shapes_xla_compiles_and_cover_every_example_once():
    """Under XLA each bucket's partial batch joins one pool, batched at the widest of their
    widths: n_buckets full shapes + 1 partial (up to 2 x n_buckets without the pool)."""
    rng = np.random.default_rng(2)
    x, lengths = padded_tokens(rng, 1000, 50, vocab=100)
    y = rng.integers(0, 3, size=1000).astype(np.int32)
    plain = BucketedBatches(x, y, batch_size=64, n_buckets=4, shuffle=True, seed=1)
    pooled = plain.with_pooled_remainders()

    def shapes(plan):
        return {(len(idx), width) for width, idx in plan.batches}

    assert len(shapes(plain)) == 8  # every bucket ends with a partial batch of its own
    for epoch in range(2):
        if epoch:  # a shuffled epoch draws new remainders
            list(pooled)
        assert len(shapes(pooled)) <= 4 + 1
        assert sorted(pooled.order.tolist()) == list(range(1000))
        for width, idx in pooled.batches:
            assert np.all(lengths[idx] <= width)  # trimmed, never cut
    assert sum(len(i) == 64 for _, i in pooled.batches) == 1000 // 64
    assert pooled.with_pooled_remainders() is pooled
    exact = BucketedBatches(x, y, batch_size=64, exact=True)
    assert exact.with_pooled_remainders() is exact  # exact mode keeps batches unpadded


@pytest.mark.parametrize("mode", [{"exact": True}, {}, {"enabled": False}, {"pooled": True}])
def test_the_tf_dataset_yields_the_batches_iteration_does(mode):
    """`dataset()` draws each epoch's plan in Python and slices in tf.data: the same
    batches, in the same order, epoch after epoch, as iterating the plan itself; with
    tf.data's autotuning off (its model thread held up each iterator's destruction)."""
    rng = np.random.default_rng(1)
    x, _ = padded_tokens(rng, 300, 20, vocab=50)
    y = rng.integers(0, 3, size=300).astype(np.int32)
    weights = rng.random(300).astype(np.float32)
    mode = dict(mode)
    pooled = mode.pop("pooled", False)
    mine = BucketedBatches(x, y, 16, 4, shuffle=True, seed=3, sample_weight=weights, **mode)
    same = BucketedBatches(x, y, 16, 4, shuffle=True, seed=3, sample_weight=weights, **mode)
    if pooled:
        mine, same = mine.with_pooled_remainders(), same.with_pooled_remainders()
        assert mine.pool_remainders
    dataset = mine.dataset()
    assert dataset.options().autotune.enabled is False
    for _epoch in range(2):
        got = [tuple(t.numpy() for t in batch) for batch in dataset]
        expected = list(same)
        assert len(got) == len(expected) == len(mine)
        for batch, wanted in zip(got, expected, strict=True):
            for a, b in zip(batch, wanted, strict=True):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == np.asarray(b).dtype or a.dtype == np.int32
    tokens_only = BucketedBatches(x, None, 16, 4, **mode)
    for (a,), (b,) in zip(tokens_only.dataset(), tokens_only, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)


def test_tuner_seed_zero_is_a_fixed_seed():
    """keras-tuner treats seed 0 as 'unseeded'; ours must sample the same trials every run."""
    from pipeline.search.oracles import make_oracle

    cfg = compose_config()
    assert cfg.tuner.seed == 0
    assert make_oracle(cfg.tuner).seed == make_oracle(cfg.tuner).seed


def test_trial_records_and_configs_logged_before_the_redesign_still_read():
    """Runs logged by the flat-module layout: trial.json with executions_per_trial and
    a config.yaml without `plugins` (and with tuner.executions_per_trial)."""
    from omegaconf import OmegaConf

    from pipeline.config import Config, compose_config, to_plain
    from pipeline.search.reproduction import _current_layout
    from pipeline.tracking import TrialRecord
    from pipeline.tracking.records import StaleRecordError

    old = {"hyperparameters": {"pooling": "mean"}, "seed": 1, "executions_per_trial": 1}
    record = TrialRecord.from_json({**old, "data_fingerprint": "abc"})
    assert record == TrialRecord({"pooling": "mean"}, 1, "abc", None)
    assert TrialRecord.from_json(record.to_json()) == record
    with pytest.raises(StaleRecordError, match="executions_per_trial=2"):
        TrialRecord.from_json({**old, "executions_per_trial": 2, "data_fingerprint": "abc"})

    logged = to_plain(compose_config())
    del logged["plugins"]
    logged["tuner"]["executions_per_trial"] = 1
    cfg = OmegaConf.merge(OmegaConf.structured(Config), _current_layout(OmegaConf.create(logged)))
    assert cfg.plugins == [] and "executions_per_trial" not in cfg.tuner


def test_configs_logged_before_a_training_key_existed_retrain_as_they_did():
    """No `train.steps_per_execution` (one step per call then) and no
    `train.bucketing.exact` (quantile buckets): reproduction fills in the old behaviour,
    not today's defaults, so it retrains on the original floating-point path."""
    from omegaconf import OmegaConf

    from pipeline.config import Config, compose_config, to_plain
    from pipeline.search.reproduction import _current_layout

    logged = to_plain(compose_config(["train.steps_per_execution=4"]))
    assert logged["train"]["steps_per_execution"] == 4
    cfg = OmegaConf.merge(OmegaConf.structured(Config), _current_layout(OmegaConf.create(logged)))
    assert cfg.train.steps_per_execution == 4  # a logged value is kept
    assert cfg.model.lstm_kernel == "fused"
    assert cfg.model.xla_lstm == "bptt"
    assert cfg.train.xla.shards == "auto"
    assert cfg.data.synthetic.rule == "negation"
    del logged["train"]["steps_per_execution"]
    del logged["train"]["xla"]["shards"]
    del logged["train"]["bucketing"]["exact"]
    del logged["model"]["lstm_kernel"]
    del logged["model"]["xla_lstm"]
    del logged["data"]["synthetic"]["rule"]
    cfg = OmegaConf.merge(OmegaConf.structured(Config), _current_layout(OmegaConf.create(logged)))
    assert cfg.train.steps_per_execution == 1
    assert cfg.train.xla.shards == 1  # Keras' XLA step
    assert cfg.train.bucketing.exact is False
    assert cfg.model.lstm_kernel == "keras"  # Keras' loop, as those runs trained
    assert cfg.model.xla_lstm == "keras"  # and under XLA too
    assert cfg.data.synthetic.rule == "majority"  # the synthetic task of those runs
