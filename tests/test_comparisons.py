"""Comparisons on per-example evidence: the two-level bootstrap, the three verdicts, and
their calibration on simulated searches (no TensorFlow, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.reporting.comparisons import comparisons, resolve_baseline
from pipeline.reporting.paired import pair_predictions, two_level_bootstrap
from pipeline.tracking import Predictions

CLASSES = 3


def predictions_from_correctness(correct: np.ndarray, y: np.ndarray) -> Predictions:
    """Probabilities whose argmax is right exactly where `correct` says."""
    n = len(y)
    predicted = np.where(correct, y, (y + 1) % CLASSES)
    probs = np.full((n, CLASSES), 0.1)
    probs[np.arange(n), predicted] = 0.8
    return Predictions(np.arange(n), y, probs)


def simulated_search(rng, gap_latent: float, seeds=3, examples=500, tau=0.3, seed_sd=0.0):
    """Two configurations on one validation set. Each example has a latent difficulty z_i
    shared by every model; a model gets it right when z_i + effect + its seed's shift +
    tau * noise > 0. tau=0.3 makes two models of one configuration disagree on ~9% of the
    examples (training randomness, example by example); seed_sd adds a whole-model shift
    per (configuration, seed)."""
    z = rng.normal(0.9, 1.0, size=examples)
    y = rng.integers(0, CLASSES, size=examples)
    rows, preds = [], {}
    for label, effect in (("better", gap_latent), ("base", 0.0)):
        preds[("d", label)] = {}
        for s in range(seeds):
            shift = rng.normal(0, seed_sd)
            correct = z + effect + shift + tau * rng.normal(size=examples) > 0
            preds[("d", label)][s] = predictions_from_correctness(correct, y)
            rows.append({"data": "d", "label": label, "seed": s, "val_accuracy": correct.mean()})
    return pd.DataFrame(rows), preds


def verdicts(
    gap_latent: float, searches: int, seed: int, seed_sd: float = 0.0
) -> tuple[list[str], float]:
    rng = np.random.default_rng(seed)
    found, gaps = [], []
    for _ in range(searches):
        runs, preds = simulated_search(rng, gap_latent, seed_sd=seed_sd)
        (c,) = comparisons(runs, preds, "val_accuracy", baseline="base", resamples=1000)
        found.append(c.verdict)
        gaps.append(c.diff)
    return found, float(np.mean(gaps))


def test_identical_variants_are_declared_different_in_at_most_5_percent_of_searches():
    found, gap = verdicts(0.0, searches=400, seed=1)
    beats = found.count("beats") / len(found)
    print(f"identical variants: 'beats' in {beats:.1%} of 400 searches (mean gap {gap:+.4f})")
    assert beats <= 0.05
    assert abs(gap) < 0.002


def test_whole_model_seed_shifts_do_not_pass_for_a_difference():
    """Seeds that move a model's accuracy as a whole (sd ~0.7 points here) widen the
    interval instead of producing wins: the bootstrap draws n-1 of the n seeds."""
    found, _ = verdicts(0.0, searches=200, seed=3, seed_sd=0.02)
    beats = found.count("beats") / len(found)
    print(f"identical variants with seed shifts: 'beats' in {beats:.1%} of 200 searches")
    assert beats <= 0.05


def test_a_3_point_better_variant_is_found_in_at_least_80_percent_of_searches():
    found, gap = verdicts(0.125, searches=400, seed=2)
    beats = found.count("beats") / len(found)
    print(f"3-point gap: 'beats' in {beats:.1%} of 400 searches (mean gap {gap:+.4f})")
    assert gap >= 0.03  # the simulated variant really is 3 points better on average
    assert beats >= 0.80


def test_a_consistent_large_gap_on_3_seeds_is_a_win_not_no_clear_difference():
    """The case that motivated this: 8.6 points on every one of 3 seeds."""
    rng = np.random.default_rng(0)
    runs, preds = simulated_search(rng, 0.35, examples=2000)
    (c,) = comparisons(runs, preds, "val_accuracy", baseline="base")
    assert c.diff > 0.07 and c.verdict == "beats"
    assert c.sentence().startswith("better beats base by ")
    assert "95% interval" not in c.sentence().split("(")[0]  # the interval is the headline
    assert "two-level bootstrap p=" in c.sentence() and "McNemar per seed" in c.sentence()


def test_close_variants_with_much_evidence_are_equivalent_and_thin_evidence_is_underpowered():
    rng = np.random.default_rng(3)
    runs, preds = simulated_search(rng, 0.0, seeds=5, examples=20000, tau=0.2, seed_sd=0.0)
    (c,) = comparisons(runs, preds, "val_accuracy", baseline="base", margin_points=1.0)
    assert c.verdict == "equivalent", c.sentence()
    assert "equivalent within ±1 point:" in c.sentence()

    runs, preds = simulated_search(rng, 0.04, seeds=2, examples=100, tau=0.6, seed_sd=0.05)
    (c,) = comparisons(runs, preds, "val_accuracy", baseline="base", margin_points=1.0)
    assert c.verdict == "underpowered", c.sentence()
    assert c.sentence().startswith("underpowered: the data cannot tell better from base")
    assert c.seeds_needed is None or c.seeds_needed > 2
    assert "no clear difference" not in c.sentence()


def test_bootstrap_interval_and_point_estimate_agree_with_the_data():
    rng = np.random.default_rng(4)
    runs, preds = simulated_search(rng, 0.3)
    evidence = pair_predictions(preds[("d", "better")], preds[("d", "base")])
    per_seed = evidence.per_seed("accuracy")
    logged = runs.pivot(index="seed", columns="label", values="val_accuracy")
    np.testing.assert_allclose(per_seed, logged["better"] - logged["base"], atol=1e-12)
    dist = two_level_bootstrap(evidence, "accuracy", resamples=500)
    assert dist.min() <= per_seed.mean() <= dist.max()
    # Macro-F1 and loss have their own per-example forms.
    for metric in ("val_macro_f1", "val_loss"):
        (c,) = comparisons(runs.assign(**{metric: 0.0}), preds, metric, baseline="base")
        assert c.method == "two-level bootstrap" and np.isfinite(c.p_value)


def test_baseline_means_k_minus_1_tests_and_holm_comes_from_statsmodels():
    rng = np.random.default_rng(5)
    runs, preds = simulated_search(rng, 0.2)
    more, more_preds = simulated_search(rng, 0.1)
    more = more[more["label"] == "better"].assign(label="middle")
    preds[("d", "middle")] = more_preds[("d", "better")]
    runs = pd.concat([runs, more])
    everything = comparisons(runs, preds, "val_accuracy")
    against = comparisons(runs, preds, "val_accuracy", baseline="base")
    assert len(everything) == 3 and len(against) == 2
    assert all(c.b == "base" and c.n_tests == 2 for c in against)
    from statsmodels.stats.multitest import multipletests

    expected = multipletests([c.p_value for c in against], method="holm")[1]
    assert [c.p_adjusted for c in against] == pytest.approx(list(expected))


def test_seed_level_fallback_when_runs_logged_no_predictions():
    runs = pd.DataFrame(
        {
            "data": "d",
            "label": ["a"] * 3 + ["b"] * 3,
            "seed": [0, 1, 2] * 2,
            "val_accuracy": [0.80, 0.81, 0.79, 0.70, 0.72, 0.69],
        }
    )
    (c,) = comparisons(runs, {}, "val_accuracy", baseline="b")
    assert c.method == "paired t-test over seeds" and c.examples is None
    assert c.sources.startswith("seeds only")
    assert c.diff == pytest.approx(0.0967, abs=1e-3)


def test_baseline_names_resolve_to_one_configuration():
    labels = ["attn-tanh units=32", "attn-tanh units=64", "classic", "mean"]
    assert resolve_baseline("classic", labels) == "classic"
    assert resolve_baseline("attn-tanh units=32", labels) == "attn-tanh units=32"
    # A baseline spelled the way older versions labelled it still resolves.
    assert resolve_baseline("attention-tanh units=32", labels) == "attn-tanh units=32"
    from pipeline.errors import SearchError

    with pytest.raises(SearchError, match="matches 2 configurations"):
        resolve_baseline("attn-tanh", labels)


def _evidence(n_examples: int, flip: float, seeds: int = 3, seed: int = 0):
    """a and b right on the same examples except `flip` of them each, drawn per seed:
    a small true gap (a's flips are fewer), seeds that barely disagree."""
    from pipeline.reporting.paired import PairedEvidence

    rng = np.random.default_rng(seed)
    y = np.tile(rng.integers(0, 2, n_examples), (seeds, 1))
    one_hot = np.eye(2)[y]

    def model(share: float) -> np.ndarray:
        wrong = rng.random((seeds, n_examples)) < share
        return np.where(wrong[..., None], 1 - one_hot, one_hot)

    return PairedEvidence(list(range(seeds)), y, model(flip * 0.9), model(flip))


def test_a_gap_the_validation_split_cannot_resolve_asks_for_a_bigger_split_not_seeds():
    """The two-level interval carries the examples' noise, which more seeds leave as it is:
    on a small split no number of seeds settles a small gap, and the report says so
    instead of promising "about N seeds"; on a split 40x larger, seeds can."""
    from pipeline.reporting.comparisons import compare_predictions

    small = compare_predictions("d", "a", "b", "val_accuracy", _evidence(2000, 0.1), 0.01)
    small.p_adjusted = small.p_value
    small.decide()
    assert small.verdict == "underpowered" and small.split_limited
    assert small.seeds_needed is None and small.example_sd > small.seed_spread / np.sqrt(3)
    assert "no number of seeds settles it on 2000 validation examples" in small.short()
    assert "a larger validation split (data.val_fraction)" in small.sentence()
    large = compare_predictions("d", "a", "b", "val_accuracy", _evidence(80_000, 0.1), 0.001)
    large.p_adjusted = 1.0  # as if adjusted away: the power plan is what is checked
    large.decide()
    assert not large.split_limited and large.seeds_needed is not None
    assert large.example_sd < small.example_sd / 5
    # Each seed on its own split (search.vary_split): more seeds shrink that noise too.
    small.split_varies = True
    small.decide()
    assert not small.split_limited and small.seeds_needed is not None
    assert "validation examples" not in small.short() and "seeds needed" in small.short()
