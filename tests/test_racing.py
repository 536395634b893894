"""Racing on scripted evidence (simulated replicates, no TensorFlow): who is dropped, who
gets more seeds, when the race stops, the error rates at reduced counts, and a replay of
a recorded design."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.race import (
    SimulatedTask,
    calibration,
    effect_for,
    read_design,
    replay,
)
from pipeline.search.racing import (
    EQUIVALENT,
    SPLIT_LIMITED,
    WORSE,
    Race,
    RaceSettings,
    run_race,
    spent,
)

FAST = RaceSettings(resamples=500)


def raced(gaps: dict[str, float], settings=FAST, examples=500, baseline=None, seed=0):
    task = SimulatedTask(
        np.random.default_rng(seed), {k: effect_for(v) for k, v in gaps.items()}, examples, 0.0
    )
    race = Race(settings, "val_accuracy", list(range(settings.most)), baseline=baseline)
    return run_race(race, sorted(gaps), task.train)


def test_the_levels_of_every_look_add_up_to_at_most_alpha():
    fractions = [2 / 8, 3 / 8, 5 / 8, 1.0, 1.2]
    pairs = zip([0, *fractions[:-1]], fractions, strict=True)
    levels = [spent(0.05, b) - spent(0.05, a) for a, b in pairs]
    assert all(x >= 0 for x in levels) and sum(levels) == pytest.approx(0.05)
    assert spent(0.05, 0.25) > 0.01  # early looks can decide (a Pocock-type spending)


def test_a_clearly_worse_configuration_gets_no_seed_beyond_its_first():
    race = raced({"good": 0.0, "bad": -8.0})
    assert race.pairs["bad"].verdict == WORSE and "bad" in race.dropped
    assert race.allocation()["bad"] == FAST.first
    assert race.stopped == "every pair is decided"


def test_an_undecided_pair_gets_seeds_until_it_is_decided_or_at_the_limit():
    race = raced({"a": 0.0, "b": 1.0}, seed=3)
    seeds = race.allocation()
    assert max(seeds.values()) > FAST.first  # the look after the first seeds decided nothing
    assert seeds["a"] <= FAST.most and seeds["b"] <= FAST.most
    assert race.stopped
    assert len(race.rounds) >= 2 and race.rounds[0].startswith("round 1: 2 alive")


def test_identical_configurations_end_equivalent_on_a_large_validation_set():
    race = raced({"a": 0.0, "b": 0.0}, examples=20_000, baseline="a")
    assert race.pairs["b"].verdict == EQUIVALENT


def test_seeds_cannot_settle_a_pair_the_validation_split_is_too_small_for():
    settings = RaceSettings(resamples=500, margin=0.002)
    race = raced({"a": 0.0, "b": 0.0}, settings, examples=80, baseline="a")
    assert race.pairs["b"].verdict == SPLIT_LIMITED
    assert race.trainings < 2 * settings.most  # it stopped spending on them


def test_the_budget_stops_the_race():
    settings = RaceSettings(resamples=500, budget=6)
    race = raced({"a": 0.0, "b": 0.5, "c": 0.7}, settings)
    assert race.trainings <= 6 and "budget" in race.stopped


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"first": 1}, "search.race.first: needs 2 or more"),
        ({"most": 1}, "search.race.most: 1 is below search.race.first"),
        ({"margin": 0.0}, "search.race.margin: must be > 0"),
        ({"budget": 3}, "search.race.budget: 3 trainings"),
    ],
)
def test_bad_settings_are_named(changes, message):
    assert RaceSettings(**changes).problem().startswith(message)
    assert RaceSettings().problem() is None


def test_error_rates_at_reduced_counts():
    """The bench runs 400 races a scenario (the goals: <= 5%, >= 80%, <= 5%)."""
    rates = calibration(60, 3.0, FAST)
    assert rates["false_beats"] <= 0.1
    assert rates["found"] >= 0.7
    assert rates["false_equivalent"] <= 0.1


def test_a_recorded_design_replays_to_its_verdicts_with_fewer_trainings(tmp_path):
    gaps = {"best": 0.0, "close": -0.5, "far": -6.0, "farther": -9.0}
    task = SimulatedTask(
        np.random.default_rng(5), {k: effect_for(v) for k, v in gaps.items()}, 500, 0.0
    )
    for label in gaps:
        for seed in range(8):
            p = task.train(label, seed)
            (tmp_path / label).mkdir(exist_ok=True)
            np.savez(tmp_path / label / f"seed_{seed}.npz", index=p.index, y=p.y, probs=p.probs)
    design = read_design(tmp_path)
    incumbent, full, agree, shares = replay(design, FAST, "val_accuracy", orders=5)
    assert incumbent == "best" and full["far"] == full["farther"] == WORSE
    assert 0 <= agree <= 1 and shares.max() < 1.0  # the far ones stopped at their first seeds


RACED = [
    "+experiment=quick",
    "tracking.log_model=false",
    "attention.enabled=false",
    "search.seeds=adaptive",
    "search.race.most=3",
    "search_space=pooling",
    "search_space.pooling.values=[attention]",  # attention with tanh, and without
    "tuner=grid",
    "tuner.max_trials=2",
    "train.epochs=1",
    "train.learning_rate=0.02",
    "data.synthetic.n_examples=300",
    "search.reference=[]",
    "search.evaluate_test=false",
    "search.name=raced",
]


def test_a_grid_race_logs_each_seed_as_a_run_resumes_without_duplicates_and_is_reported(
    store, capsys
):
    import json

    from pipeline.reporting.search_report import run_report
    from pipeline.search.run import run_search

    outcome = run_search(store.compose(*RACED))
    printed = capsys.readouterr().out
    assert "race: 2 configurations, up to 3 seeds each" in printed and "race round 1" in printed
    client = store.client()
    race = json.loads(store.tracker().read_text(outcome.parent_run_id, "search/race.json"))
    children = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    per_trial = {}
    for run in children:
        per_trial.setdefault(run.data.tags["trial_id"], []).append(int(run.data.tags["seed"]))
    assert {k: len(v) for k, v in per_trial.items()} == race["seeds"]
    assert all(sorted(v) == list(range(len(v))) for v in per_trial.values())
    assert race["stopped"] and 2 <= sum(race["seeds"].values()) <= 6
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.metrics["race_trainings"] == sum(race["seeds"].values())

    run_search(store.compose(*RACED))  # resumed by name: the race replays, trains nothing
    assert "race: stopped" in capsys.readouterr().out
    again = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    assert len(again) == len(children)

    report = run_report(store.tracker(), "raced", out=store.path / "report")
    assert "## The race (search.seeds=adaptive" in report.markdown


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.race.first=1", "search.race.first: needs 2 or more"),
        ("search.race.most=1", "search.race.most: 1 is below search.race.first"),
        ("search.race.margin=0", "search.race.margin: must be > 0"),
        ("tracking.log_predictions=false", "tracking.log_predictions: search.seeds=adaptive"),
        ("search.seeds=often", "search.seeds: null, a list of whole numbers or adaptive"),
    ],
)
def test_bad_race_settings_are_one_line(override, message):
    from pipeline.config import ConfigError, compose_config
    from pipeline.runtime.checks import validate_config

    seeds = [] if override.startswith("search.seeds=") else ["search.seeds=adaptive"]
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate_config(compose_config([*seeds, override]))
