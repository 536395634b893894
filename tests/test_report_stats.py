"""Replicate statistics, per-trial aggregation and the experiment presets (no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pipeline.config import PROJECT_ROOT, compose_config, search_space_dims
from pipeline.reporting.statistics import ci95, leaderboard
from pipeline.runtime.checks import validate_config as validate
from pipeline.search.outcome import per_trial


def replicate_runs(effects: dict[str, float], seeds=range(5), noise=0.01, seed=0) -> pd.DataFrame:
    """One row per (configuration, seed): a shared per-seed offset plus the effect."""
    rng = np.random.default_rng(seed)
    seed_offset = {s: rng.normal(0, 0.05) for s in seeds}
    rows = []
    for label, effect in effects.items():
        for s in seeds:
            rows.append(
                {
                    "data": "d",
                    "label": label,
                    "group": label,
                    "seed": s,
                    "val_accuracy": 0.7 + effect + seed_offset[s] + rng.normal(0, noise),
                    "train_seconds": 10.0 + rng.normal(0, 1),
                }
            )
    return pd.DataFrame(rows)


def test_ci95_is_the_t_interval_half_width():
    values = np.array([0.70, 0.72, 0.75, 0.71])
    expected = scipy_stats.t.ppf(0.975, 3) * values.std(ddof=1) / math.sqrt(4)
    assert ci95(values) == pytest.approx(expected)
    assert math.isnan(ci95(np.array([0.7])))


def test_leaderboard_orders_by_objective_and_counts_seeds():
    runs = replicate_runs({"good": 0.05, "bad": -0.05, "mid": 0.0})
    board = leaderboard(runs, "val_accuracy")
    assert list(board["configuration"]) == ["good", "mid", "bad"]
    assert list(board["seeds"]) == [5, 5, 5]
    good = runs[runs["label"] == "good"]["val_accuracy"]
    assert board.loc[0, "val_accuracy_mean"] == pytest.approx(good.mean())
    assert board.loc[0, "val_accuracy_std"] == pytest.approx(good.std(ddof=1))
    # val_loss: lower is better, so the order flips.
    runs["val_loss"] = -runs["val_accuracy"]
    assert leaderboard(runs, "val_loss")["configuration"].iloc[0] == "good"


def test_seed_level_comparison_finds_a_real_difference_and_says_so():
    from pipeline.reporting.comparisons import comparisons

    runs = replicate_runs({"attention-tanh": 0.02, "mean": 0.0}, noise=0.004)
    (comp,) = comparisons(runs, {}, "val_accuracy")  # no predictions: paired t over seeds
    pivot = runs.pivot(index="seed", columns="label", values="val_accuracy")
    expected = scipy_stats.ttest_rel(pivot[comp.a], pivot[comp.b]).pvalue
    assert comp.p_value == pytest.approx(expected) and comp.p_value < 0.05
    assert comp.seeds == 5 and comp.verdict == "beats"
    sentence = comp.sentence()
    assert sentence.startswith("attention-tanh beats mean by ")
    assert "points" in sentence and "5 seeds" in sentence


def test_noise_is_underpowered_or_equivalent_never_no_clear_difference():
    from pipeline.reporting.comparisons import comparisons

    runs = replicate_runs({"a": 0.0, "b": 0.0}, noise=0.03, seed=3)
    (comp,) = comparisons(runs, {}, "val_accuracy")
    assert comp.p_value > 0.05 and comp.verdict == "underpowered"
    assert comp.sentence().startswith("underpowered: the data cannot tell a from b")
    assert "no clear difference" not in comp.sentence()
    assert comp.seeds_needed and comp.seeds_needed > 5


def test_pairs_only_use_matched_seeds():
    from pipeline.reporting.comparisons import comparisons

    runs = replicate_runs({"a": 0.02, "b": 0.0})
    runs = runs[~((runs["label"] == "b") & (runs["seed"] >= 3))]  # b has seeds 0-2 only
    (comp,) = comparisons(runs, {}, "val_accuracy")
    assert comp.seeds == 3
    one_seed = runs[runs["seed"] == 0]
    assert comparisons(one_seed, {}, "val_accuracy") == []  # nothing to pair


def test_per_trial_averages_finished_seeds():
    trials = pd.DataFrame(
        [
            {
                "trial": 1,
                "trial_id": "00",
                "status": "FINISHED",
                "seed": 0,
                "val_accuracy": 0.6,
                "val_loss": 1.0,
                "val_macro_f1": 0.5,
                "attention_activation": "tanh",
                "seconds": 2,
            },
            {
                "trial": 1,
                "trial_id": "00",
                "status": "FINISHED",
                "seed": 1,
                "val_accuracy": 0.8,
                "val_loss": 0.8,
                "val_macro_f1": 0.7,
                "attention_activation": "tanh",
                "seconds": 3,
            },
            {"trial": 2, "trial_id": "01", "status": "FAILED", "seed": 0},
        ]
    )
    table = per_trial(trials)
    assert list(table["trial"]) == [1]
    row = table.iloc[0]
    assert row["val_accuracy"] == pytest.approx(0.7) and row["seeds"] == 2
    assert row["val_accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert row["seconds"] == 5 and row["attention_activation"] == "tanh"


PRESETS = sorted(p.stem for p in (PROJECT_ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_validates_and_says_what_it_asks(name):
    cfg = compose_config([f"+experiment={name}"])
    validate(cfg)
    text = (PROJECT_ROOT / "experiments" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")
    assert len([line for line in text.splitlines() if line.startswith("# ")]) >= 2


def test_question_presets_replicate_seeds_over_the_variants_they_compare():
    ablation = compose_config(["+experiment=pooling_ablation"])
    assert ablation.data.name == "airline_tweets" and ablation.tuner.kind == "grid"
    assert len(ablation.search.seeds) >= 3
    dims = search_space_dims(ablation.search_space)
    assert set(dims["pooling"]["values"]) == {"attention", "mean", "max", "last", "classic"}
    assert set(dims["attention_activation"]["values"]) == {"tanh", "none"}
    assert ablation.tuner.max_trials >= 6  # 4 plain poolings + 2 attention activations

    question = compose_config(["+experiment=seed_question"])
    assert len(question.search.seeds) == 5
    assert set(search_space_dims(question.search_space)["pooling"]["values"]) == {
        "attention",
        "classic",
    }
    assert (
        "airline"
        in compose_config(["+experiment=seed_question", "data=airline_tweets"]).search.name
    )

    sweep = compose_config(["+experiment=units_sweep"])
    units = search_space_dims(sweep.search_space)["units"]["values"]
    assert min(units) == 16 and max(units) == 256 and sweep.model.pooling == "attention"


def test_seeds_and_a_searched_seed_conflict():
    from pipeline.config import ConfigError

    cfg = compose_config(["search.seeds=[0,1]", "+search_space.seed={type: choice, values: [1,2]}"])
    with pytest.raises(ConfigError, match="search.seeds"):
        validate(cfg)
    with pytest.raises(ConfigError, match="repeated"):
        validate(compose_config(["search.seeds=[0,0]"]))


class RecordsTracker:
    """Stands in for Tracker.trial_runs: typed records of finished trial runs."""

    def __init__(self, records: list):
        self.records = records

    def trial_runs(self, parent_ids, status=None):
        assert status == "FINISHED"
        return [r for r in self.records if r.parent_id in set(parent_ids)]


def trial_records(parent: str, variant: str, units: int, seeds, start: int, acc: float):
    from pipeline.tracking import TrialRun

    return [
        TrialRun(
            run_id=f"{parent}-{variant}-{units}-{s}",
            name=f"trial-{s}",
            experiment_id="1",
            status="FINISHED",
            start_time=start + s,
            end_time=start + s + 1,
            parent_id=parent,
            kind="trial",
            search_id="s",
            data="airline",
            group=f"{variant}-{units}-{parent}",
            variant=variant,
            seed=s,
            params={"pooling": variant, "units": str(units)},
            metrics={"val_accuracy": acc + s / 100},
        )
        for s in seeds
    ]


def test_load_trials_keeps_live_parents_and_labels_by_what_varies():
    from pipeline.reporting.evidence import load_trials

    rows = (
        trial_records("live", "mean", 16, [0, 1], 100, 0.7)
        + trial_records("live", "mean", 64, [0, 1], 200, 0.8)
        + trial_records("old", "mean", 16, [0, 1], 0, 0.1)  # a superseded search
    )
    runs = load_trials(RecordsTracker(rows), ["live"])
    assert len(runs) == 4 and set(runs["search"]) == {"s"}
    assert sorted(runs["label"].unique()) == ["mean units=16", "mean units=64"]
    assert runs["val_accuracy"].min() == pytest.approx(0.7)  # nothing from "old"
    assert load_trials(RecordsTracker(rows), ["nobody"]).empty


def test_many_comparisons_are_adjusted_before_a_win_is_declared():
    from pipeline.reporting.comparisons import comparisons

    # Ten configurations with no real difference: raw p-values below 0.05 appear by
    # chance among 45 pairs, but none survives Holm's adjustment.
    runs = replicate_runs({f"v{i}": 0.0 for i in range(10)}, seeds=range(3), noise=0.01, seed=7)
    found = comparisons(runs, {}, "val_accuracy")
    assert len(found) == 45 and all(c.n_tests == 45 for c in found)
    assert any(c.p_value < 0.05 for c in found)
    assert not [c for c in found if c.verdict == "beats"]


def test_runs_of_both_layouts_group_into_one_configuration():
    """A search logged before the full-config layout (bare params, `attention-tanh`) and
    one after it (dotted params, a `searched` tag, `attn-tanh`) read as the same rows."""
    from dataclasses import replace

    from pipeline.reporting.evidence import load_trials

    old = trial_records("p", "attention-tanh", 16, [0, 1], 0, 0.7)
    new = [
        replace(
            r,
            run_id=r.run_id + "-new",
            variant="attn-tanh",
            params={"model.pooling": "attention", "model.units": "16", "train.epochs": "3"},
            searched=("model.units",),
        )
        for r in trial_records("p", "attention-tanh", 16, [2, 3], 10, 0.7)
    ]
    for r in old:
        r.params.pop("pooling")
    runs = load_trials(RecordsTracker(old + new), ["p"])
    assert list(runs["label"].unique()) == ["attn-tanh"]
    assert len(runs) == 4
