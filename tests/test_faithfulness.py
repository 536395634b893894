"""#14: sparse, multi-head and dot-product attention, and faithfulness measured per trial.

Layers are checked against NumPy references and for masks, padding invariance and
`safe_mode=True` loading; the faithfulness numbers on hand-made models whose decisive
token is known; the preset through a quick real search that must log every metric.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.diagnostics.faithfulness import (
    compact,
    erasure_metrics,
    evaluation_subset,
    measure,
    occlusion_saliency,
    rank_agreement,
)
from pipeline.tracking import Metric

DECISIVE = 9


def sparsemax_reference(z: np.ndarray) -> np.ndarray:
    """Martins & Astudillo (2016), Algorithm 1, one vector at a time."""
    out = []
    for row in np.atleast_2d(z):
        s = np.sort(row)[::-1]
        k = np.arange(1, len(row) + 1)
        cumulative = np.cumsum(s)
        k_z = k[1 + k * s > cumulative][-1]
        tau = (cumulative[k_z - 1] - 1) / k_z
        out.append(np.maximum(row - tau, 0))
    return np.array(out)


def test_sparsemax_matches_the_reference_and_gives_exact_zeros():
    from pipeline.models.layers import sparsemax

    z = np.random.default_rng(0).normal(size=(50, 12)).astype("float32") * 2
    got = np.asarray(sparsemax(z))
    np.testing.assert_allclose(got, sparsemax_reference(z), atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got == 0).mean() > 0.5  # sparse: most weights are exactly zero
    # Constant scores: uniform, like softmax.
    np.testing.assert_allclose(np.asarray(sparsemax(np.zeros((1, 4), "float32"))), 0.25)


def test_masked_sparsemax_ignores_padding_whatever_its_scores():
    from pipeline.models.layers import sparsemax

    z = np.random.default_rng(1).normal(size=(20, 8)).astype("float32")
    mask = np.arange(8)[None, :] < np.random.default_rng(2).integers(1, 9, size=(20, 1))
    huge = np.where(mask, z, 50.0).astype("float32")  # padding scored highest
    got = np.asarray(sparsemax(huge, mask))
    assert np.all(got[~mask] == 0.0)
    for row, m, zr in zip(got, mask, z, strict=True):
        np.testing.assert_allclose(row[m], sparsemax_reference(zr[m])[0], atol=1e-6)
    everything_masked = np.asarray(sparsemax(z[:1], np.zeros((1, 8), bool)))
    assert np.all(everything_masked == 0.0)


def test_sparsemax_has_gradients_on_its_support():
    import tensorflow as tf

    from pipeline.models.layers import sparsemax

    z = tf.Variable([[2.0, 1.5, -3.0, 0.1]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sparsemax(z) * tf.constant([[1.0, 0.0, 0.0, 0.0]]))
    grad = tape.gradient(loss, z).numpy()
    # Sparsemax's Jacobian on support S: I - 1 1^T / |S|; zero off the support.
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0, 0.0]], atol=1e-6)


NEW_VARIANTS = [
    {"pooling": "attention", "attention_normalizer": "sparsemax"},
    {"pooling": "attention", "attention_heads": 4},
    {"pooling": "attention", "attention_heads": 2, "attention_head_merge": "mean"},
    {"pooling": "attention", "attention_temperature": 0.25, "attention_hidden": 4},
    {"pooling": "dot_attention"},
    {"pooling": "dot_attention", "attention_normalizer": "sparsemax", "attention_heads": 4},
    {"pooling": "dot_attention", "attention_hidden": 6, "attention_heads": 2},
]
IDS = np.array([[5, 6, 7, 8, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 0]], dtype="int32")


def small_model(extra: dict):
    import keras

    from pipeline.models.build import build_model

    settings = {
        "embedding_dim": 8,
        "units": 8,
        "bidirectional": False,
        "pooling": "attention",
        "attention_activation": "tanh",
        "attention_hidden": 0,
        "dropout": 0.0,
        "dense_units": 0,
        **extra,
    }
    keras.utils.set_random_seed(0)
    return settings, build_model(settings, vocab_size=20, n_classes=3, learning_rate=1e-3)


@pytest.mark.parametrize("extra", NEW_VARIANTS, ids=lambda e: "-".join(map(str, e.values())))
def test_new_variants_mask_padding_and_load_in_safe_mode(extra, tmp_path):
    import keras

    from pipeline.models.build import attention_and_probs
    from pipeline.models.registry import variant_of

    settings, model = small_model(extra)
    variant = variant_of(settings)
    probs, weights = attention_and_probs(model, variant, IDS)
    _, heads = attention_and_probs(model, variant, IDS, per_head=True)
    assert np.all(weights[IDS == 0] == 0.0)  # exactly zero on padding
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert heads.shape == (2, settings.get("attention_heads", 1), IDS.shape[1])
    np.testing.assert_allclose(heads.mean(axis=1), weights, atol=1e-6)
    # Padding invariance: more padding changes nothing.
    wider = np.pad(IDS, ((0, 0), (0, 7)))
    np.testing.assert_allclose(model.predict(wider, verbose=0), probs, atol=1e-5)
    np.testing.assert_allclose(
        attention_and_probs(model, variant, wider)[1][:, : IDS.shape[1]], weights, atol=1e-5
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(IDS, verbose=0), probs, atol=1e-6)


def test_uniform_ablation_equals_the_model_when_its_weights_are_uniform():
    from pipeline.models.build import uniform_attention_probs
    from pipeline.models.registry import variant_of

    for extra in ({}, {"attention_normalizer": "sparsemax", "attention_heads": 4}):
        settings, model = small_model(extra)
        pooling = model.get_layer("pooling")
        pooling.set_weights([np.zeros_like(w) for w in pooling.get_weights()])  # flat scores
        uniform = uniform_attention_probs(model, variant_of(settings), IDS)
        np.testing.assert_allclose(uniform, model.predict(IDS, verbose=0), atol=1e-6)
    settings, model = small_model({})
    assert not np.allclose(
        uniform_attention_probs(model, variant_of(settings), IDS), model.predict(IDS, verbose=0)
    )


def test_every_label_tells_the_variants_apart():
    from pipeline.models.registry import variant_label

    assert variant_label({"pooling": "attention", "attention_activation": "tanh"}) == "attn-tanh"
    assert (
        variant_label(
            {
                "pooling": "attention",
                "attention_activation": "none",
                "attention_normalizer": "sparsemax",
                "attention_heads": 4,
            }
        )
        == "spattn4-none"
    )
    assert variant_label({"pooling": "dot_attention", "attention_heads": 2}) == "dot2"


class DecisiveTokenModel:
    """Class 1 with probability 0.99 when token 9 is present, else class 0 with 0.99."""

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        p1 = np.where((ids == DECISIVE).any(axis=1), 0.99, 0.01)
        return np.stack([1 - p1, p1], axis=1)


def decisive_examples(n: int = 20, length: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = np.zeros((n, length + 4), dtype="int32")
    for i in range(n):
        ids[i, :length] = rng.integers(2, 9, size=length)
        ids[i, rng.integers(length)] = DECISIVE
    return ids


def one_hot_on(ids: np.ndarray, token: int | None) -> np.ndarray:
    """Weights all on `token` (or on the first other real token)."""
    w = np.zeros(ids.shape)
    for i, row in enumerate(ids):
        pos = (
            np.flatnonzero(row == token)[0]
            if token
            else np.flatnonzero((row != 0) & (row != DECISIVE))[0]
        )
        w[i, pos] = 1.0
    return w


def test_attention_on_the_decisive_token_is_comprehensive_and_sufficient():
    ids = decisive_examples()
    predict, base = DecisiveTokenModel(), DecisiveTokenModel()(ids)
    on = erasure_metrics(predict, ids, base, one_hot_on(ids, DECISIVE), [0.1], seed=0)
    off = erasure_metrics(predict, ids, base, one_hot_on(ids, None), [0.1], seed=0)
    assert on[Metric.comprehensiveness(10)] == pytest.approx(0.98)
    assert on[Metric.sufficiency(10)] == pytest.approx(0.0)
    assert off[Metric.comprehensiveness(10)] == pytest.approx(0.0)
    assert off[Metric.sufficiency(10)] == pytest.approx(0.98)
    # Random tokens: one of 10 removed, so the decisive one about a tenth of the time.
    assert 0.0 < on[Metric.comprehensiveness(10, random=True)] < 0.3


def test_occlusion_finds_the_decisive_token_and_ranks_agree():
    ids = decisive_examples()
    saliency = occlusion_saliency(DecisiveTokenModel(), ids)
    np.testing.assert_allclose(saliency, (ids == DECISIVE).astype(float))
    found = measure(DecisiveTokenModel(), ids, np.arange(len(ids)), [0.1, 0.2], 0)
    assert found.metrics[Metric.comprehensiveness(20)] == pytest.approx(0.98)
    assert Metric.FAITH_OCCLUSION_TAU not in found.metrics  # no weights: saliency ranks
    agree = rank_agreement(one_hot_on(ids, DECISIVE), saliency, ids)
    disagree = rank_agreement(one_hot_on(ids, None), saliency, ids)
    assert agree == pytest.approx(1.0) and disagree < 0
    with_weights = measure(
        DecisiveTokenModel(), ids, np.arange(5), [0.1], 0, weights=one_hot_on(ids, None)
    )
    assert with_weights.metrics[Metric.FAITH_OCCLUSION_TAU] < 0
    assert with_weights.metrics[Metric.FAITH_EXAMPLES] == 5


def test_kendall_tau_b_matches_scipy_with_ties():
    from scipy.stats import kendalltau

    from pipeline.diagnostics.faithfulness import kendall_tau_b

    rng = np.random.default_rng(0)
    for n in (2, 5, 30):
        a = rng.integers(0, 4, n).astype(float)  # many ties
        b = a + rng.normal(size=n)
        assert kendall_tau_b(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    assert np.isnan(kendall_tau_b(np.ones(4), np.arange(4.0)))


def test_removing_tokens_moves_the_rest_up():
    row = np.array([5, 6, 7, 0, 0])
    keep = np.array([True, False, True, True, True])
    assert compact(row, keep).tolist() == [5, 7, 0, 0, 0]


def test_evaluation_subset_is_bounded_seeded_and_stratified():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 60, 140])
    lengths = rng.integers(5, 40, size=len(y))
    ids = (np.arange(40)[None, :] < lengths[:, None]).astype("int32") * 7
    a = evaluation_subset(ids, y, max_examples=100, max_occlusions=10_000, seed=0)
    assert len(a) == 100 and np.array_equal(a, evaluation_subset(ids, y, 100, 10_000, 0))
    shares = np.bincount(y[a], minlength=3) / len(a)
    np.testing.assert_allclose(shares, [0.6, 0.12, 0.28], atol=0.03)
    budget = evaluation_subset(ids, y, max_examples=100, max_occlusions=500, seed=0)
    assert lengths[budget].sum() <= 500 and len(budget) < 100


def test_faithfulness_settings_are_checked(store):
    from pipeline.config import ConfigError
    from pipeline.runtime.checks import validate_config

    for override, key in [
        ("attention.faithfulness.fractions=[0.0]", "attention.faithfulness.fractions"),
        ("attention.faithfulness.max_examples=0", "attention.faithfulness.max_examples"),
        ("model.attention_temperature=0", "model.attention_temperature"),
        ("model.attention_normalizer=entmax", "model.attention_normalizer"),
        ("model.attention_heads=3", "model.attention_heads"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(store.compose(override))


@pytest.mark.e2e
def test_the_preset_composes_and_a_quick_run_logs_every_metric(store):
    from pipeline.reporting.search_report import build_report
    from pipeline.search import run_search
    from pipeline.tracking import Tracker

    cfg = store.compose(
        "+experiment=attention_faithfulness",
        "search.seeds=[0]",
        "search.name=faith",
        "data.synthetic.n_examples=240",
        "data.max_len=24",
        "data.synthetic.max_tokens=24",
        "train.epochs=1",
        "model.units=8",
        "model.embedding_dim=8",
        "search_space.pooling.values=[attention,mean]",
        "search_space.attention_heads.values=[4]",
        "search_space.attention_temperature.values=[0.5]",
        "tuner.max_trials=3",
    )
    assert cfg.search.baseline == "attn-tanh" and list(cfg.search.seeds) == [0]
    cfg.search.baseline = "attn4-tanh"  # attn-tanh (1 head) is not in this small grid
    run_search(cfg)
    children = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    assert len(children) == 3  # attn4-tanh, spattn4-tanh, mean
    for child in children:
        metrics, variant = child.data.metrics, child.data.tags["variant"]
        assert child.data.tags["faith_ranking"] == (
            "saliency" if variant == "mean" else "attention"
        )
        for k in (10, 20):
            for name in (Metric.comprehensiveness, Metric.sufficiency):
                assert np.isfinite(metrics[name(k)]) and np.isfinite(metrics[name(k, True)])
        assert metrics[Metric.FAITH_EXAMPLES] >= 1
        if variant != "mean":
            for name in (
                Metric.FAITH_OCCLUSION_TAU,
                Metric.FAITH_UNIFORM_DELTA,
                Metric.ATTENTION_ON_KEYS,
                Metric.ATTENTION_TOP1_KEY_HIT,
            ):
                assert name in metrics, (variant, name)
    assert {c.data.tags["variant"] for c in children} == {"attn4-tanh", "spattn4-tanh", "mean"}
    multi_head = next(c for c in children if c.data.tags["variant"] == "spattn4-tanh")
    assert multi_head.data.params["model.attention_temperature"] == "0.5"
    panel = store.client().download_artifacts(
        multi_head.info.run_id, "attention/final_attention.json", str(store.path)
    )
    example = json.loads(Path(panel).read_text())["examples"][0]
    assert len(example["head_weights"]) == 4  # every head's weights, for plots
    np.testing.assert_allclose(
        np.mean(example["head_weights"], axis=0), example["weights"], atol=1e-5
    )
    assert "\n" in json.loads(Path(panel).read_text())["title"]  # the numbers in the title
    tracker = Tracker.from_config(cfg.tracking)
    tracker.connect()
    report = build_report(tracker, "faith", None, store.path / "report", [])
    assert "Is the attention an explanation?" in report.markdown
    assert "spattn4-tanh" in report.markdown and "comp. top 20%" in report.markdown
