"""Racing on scripted evidence (simulated replicates, no TensorFlow): who is dropped, who
gets more seeds, when the race stops, the error rates at reduced counts, and a replay of
a recorded design."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.bench.race import (
    SimulatedTask,
    bound,
    calibration,
    effect_for,
    read_design,
    replay,
)
from pipeline.search.racing import (
    EQUIVALENT,
    FUTILE,
    SPLIT_LIMITED,
    WORSE,
    Race,
    RaceSettings,
    nominal_levels,
    run_race,
    spent,
)
from pipeline.tracking.records import Predictions

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


def test_the_nominal_levels_of_repeated_looks_keep_the_error_rate_of_one():
    """A single look tests at alpha; seven looks (2..8 of 8 seeds) each test at more than
    alpha / 7 (the looks are correlated) and less than alpha, and a statistic with no
    effect, drawn as the looks see it, crosses some boundary in about alpha of paths."""
    assert nominal_levels(0.05, (1.0,))[0] == pytest.approx(0.05, abs=0.002)
    fractions = tuple(k / 8 for k in range(2, 9))
    levels = np.asarray(nominal_levels(0.05, fractions))
    assert (levels > 0.05 / 7).all() and (levels < 0.05).all()
    rng = np.random.default_rng(1)
    steps = np.diff((0.0, *fractions))
    paths = np.cumsum(rng.normal(size=(50_000, 7)) * np.sqrt(steps), axis=1)
    p = 2 * stats.norm.sf(np.abs(paths / np.sqrt(fractions)))
    assert (p < levels).any(axis=1).mean() == pytest.approx(0.05, abs=0.005)


def test_identical_configurations_on_a_small_split_are_futile_before_most_seeds():
    race = raced({"a": 0.0, "b": 0.0}, baseline="a")
    assert race.pairs["b"].verdict == FUTILE and race.trainings < 2 * FAST.most
    assert "1 futile" in race.stopped


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
    # first=4: the split's floor is weighed at the first look that could also call the
    # pair futile, and comes first
    settings = RaceSettings(first=4, resamples=500, margin=0.002)
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
    # a race that knows the verdicts spends no more than the race on the same orders
    least = bound(design, FAST, "val_accuracy", orders=5)
    assert (least <= shares + 1e-9).all() and least.min() >= 2 * 4 / 32


def test_a_recorded_design_keeps_configurations_that_share_a_variant_apart(tmp_path):
    """A units sweep has one variant over several configurations: each gets its own
    folder (variant-trialN), none overwrites another; a unique variant keeps its name."""
    from types import SimpleNamespace

    from pipeline.bench.race import record_design

    runs = [
        SimpleNamespace(run_id=f"{v}{t}{s}", variant=v, trial_id=str(t), trial_number=t, seed=s)
        for v, t in (("mean", 1), ("mean", 2), ("max", 3))
        for s in (0, 1)
    ]
    prediction = Predictions(np.arange(4), np.zeros(4, int), np.full((4, 3), 1 / 3))
    tracker = SimpleNamespace(
        find_search=lambda name: SimpleNamespace(run_id="parent"),
        trial_runs=lambda parent, status: runs,
        read_predictions=lambda run_id: prediction,
    )
    assert record_design(tracker, "sweep", tmp_path) == 6
    design = read_design(tmp_path)
    assert {k: sorted(v) for k, v in design.items()} == {
        "mean-trial1": [0, 1],
        "mean-trial2": [0, 1],
        "max": [0, 1],
    }


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
    "train.epochs=2",  # tanh and none differ from the second epoch: the pair is undecided
    "train.learning_rate=0.02",
    "data.synthetic.n_examples=600",
    "search.reference=[]",
    "search.evaluate_test=false",
    "search.name=raced",
]


def wait_for_a_running_seed(tmp_path, seed: int, proc, timeout: float = 300) -> None:
    """Until a run of `seed` is RUNNING past its first epoch (read-only sqlite3, as
    tests/test_lifecycle.py reads the store under a live search)."""
    import sqlite3
    import time

    query = (
        "SELECT 1 FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid WHERE t.key = 'seed' "
        "AND t.value = ? AND r.status = 'RUNNING' AND EXISTS "
        "(SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'loss')"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            with sqlite3.connect(f"file:{tmp_path}/mlflow.db?mode=ro", uri=True) as conn:
                if conn.execute(query, (str(seed),)).fetchall():
                    return
        except sqlite3.Error:  # not created yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no run of seed {seed} started")


def test_a_grid_race_killed_mid_race_resumes_the_same_race_without_duplicates(store, capsys):
    """kill -9 of `python -m pipeline.search` inside the race's first extra training (a
    barrier holds it there, tests/plugins/epoch_barrier.py); the same search, resumed by
    name, marks that run FAILED, replays the race on the seeds already logged and trains
    only what is missing: one run per configuration and seed, the race recorded and
    reported."""
    import json
    import os
    import signal
    import subprocess

    from pipeline.reporting.search_report import run_report
    from pipeline.search.run import run_search
    from tests.conftest import PROJECT_ROOT, store_overrides
    from tests.forked_cli import popen_python

    first_trainings = 4  # 2 configurations x search.race.first seeds, by keras-tuner
    env = {**os.environ, "EPOCH_BARRIER": str(store.path / "never"),
           "EPOCH_BARRIER_AFTER": str(first_trainings * 2 + 1)}  # fmt: skip
    proc = popen_python(
        ["-m", "pipeline.search", *RACED, "plugins=[tests.plugins.epoch_barrier]",
         *store_overrides(store.path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    wait_for_a_running_seed(store.path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    assert len(killed) == first_trainings + 1
    assert [int(r.data.tags["seed"]) for r in killed if r.info.status == "RUNNING"] == [2]

    outcome = run_search(store.compose(*RACED))
    printed = capsys.readouterr().out
    assert "interrupted trial run(s) marked FAILED" in printed
    assert "race: 2 configurations, up to 3 seeds each" in printed and "race round 1" in printed
    race = json.loads(store.tracker().read_text(outcome.parent_run_id, "search/race.json"))
    children = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    per_trial: dict[str, list[int]] = {}
    for run in children:
        if run.info.status == "FINISHED":
            per_trial.setdefault(run.data.tags["trial_id"], []).append(int(run.data.tags["seed"]))
    assert {k: len(v) for k, v in per_trial.items()} == race["seeds"]
    assert all(sorted(v) == list(range(len(v))) for v in per_trial.values())  # none twice
    assert [r.info.status for r in children if r.info.status != "FINISHED"] == ["FAILED"]
    assert race["stopped"] and 5 <= sum(race["seeds"].values()) <= 6
    parent = store.client().get_run(outcome.parent_run_id)
    assert parent.data.metrics["race_trainings"] == sum(race["seeds"].values())

    run_search(store.compose(*RACED))  # resumed once more: the race replays, trains nothing
    assert "race: stopped" in capsys.readouterr().out
    assert len([r for r in store.runs() if r.data.tags.get("kind") == "trial"]) == len(children)

    report = run_report(store.tracker(), "raced", out=store.path / "report")
    assert "## The race (search.seeds=adaptive" in report.markdown

    # `bench race --record`: the search's predictions as a design the replay reads
    from pipeline.bench.race import record_design

    assert record_design(store.tracker(), "raced", store.path / "design") == sum(
        race["seeds"].values()
    )
    design = read_design(store.path / "design")
    names = race["configurations"]
    assert {k: sorted(v) for k, v in design.items()} == {
        names[trial]: list(range(n)) for trial, n in race["seeds"].items()
    }


def test_a_random_search_races_its_top_k_configurations(store, capsys):
    """Random search explores 3 configurations on its first 2 seeds; the race takes the 2
    best (search.race.top_k) and leaves the third as it is."""
    import json

    from pipeline.search.run import run_search

    outcome = run_search(store.compose(
        "+experiment=quick", "tracking.log_model=false", "attention.enabled=false",
        "search.seeds=adaptive", "search.race.most=3", "search.race.top_k=2",
        "tuner.max_trials=3", "search.evaluate_test=false", "search.name=topk",
    ))  # fmt: skip
    assert "race: 2 configurations, up to 3 seeds each" in capsys.readouterr().out
    race = json.loads(store.tracker().read_text(outcome.parent_run_id, "search/race.json"))
    first = outcome.trials[outcome.trials["seed"] < 2]  # what the exploration saw
    table = first.groupby("trial_id")["val_accuracy"].mean()
    left = set(table.index) - set(race["seeds"])
    assert len(race["seeds"]) == 2 and len(left) == 1
    assert table[list(left)].max() <= table[list(race["seeds"])].min()  # the best two raced
    assert outcome.trials.groupby("trial_id")["seed"].nunique()[left.pop()] == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.race.first=1", "search.race.first: needs 2 or more"),
        ("search.race.most=1", "search.race.most: 1 is below search.race.first"),
        ("search.race.margin=0", "search.race.margin: must be > 0"),
        ("tracking.log_predictions=false", "tracking.log_predictions: search.seeds=adaptive"),
        ("search.seeds=often", "search.seeds: null, a list of whole numbers or adaptive"),
        ("cluster=workers cluster.n_workers=0", "search.seeds: adaptive on a cluster races"),
        ("search.stop.patience=0", "search.stop.patience: must be >= 1 or null"),
        ("tuner.objective=val_loss search.stop.patience=3", "search.stop.patience: the noise"),
    ],
)
def test_bad_race_settings_are_one_line(override, message):
    from pipeline.config import ConfigError, compose_config
    from pipeline.runtime.checks import validate_config

    seeds = [] if override.startswith("search.seeds=") else ["search.seeds=adaptive"]
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate_config(compose_config([*seeds, *override.split()]))


def test_the_race_queue_hands_each_assignment_once_and_a_dead_racer_s_back(tmp_path):
    """Two racers take a round's assignments in turn; one that died gives back what it
    took and did not end, and only that."""
    from pipeline.search.race_queue import RaceQueue

    queue = RaceQueue(tmp_path / "job" / "race_round.json")
    queue.start_round([("00", 2), ("01", 2), ("01", 3)])
    first, second = queue.take("racer-1"), queue.take("racer-2")
    assert (first.trial_id, first.seed, second.trial_id) == ("00", 2, "01")
    queue.end(first, "run-a")
    third = queue.take("racer-1")
    assert (third.trial_id, third.seed) == ("01", 3) and queue.take("racer-1") is None
    assert queue.give_back("racer-1") == 1  # the third, not the ended first
    assert queue.give_back("racer-2") == 1
    again = queue.take("racer-2")
    assert (again.trial_id, again.seed) == ("01", 2)
    queue.end(again, None)  # failed
    ends = {(e.trial_id, e.seed): (e.run_id, e.failed, e.open) for e in queue.entries()}
    assert ends == {
        ("00", 2): ("run-a", False, False),
        ("01", 2): (None, True, False),
        ("01", 3): (None, False, True),
    }


def test_a_failed_replicate_in_a_round_drops_its_configuration_and_no_later_seed():
    """In one process a round trains in order; a configuration whose seed failed gets none
    of its later seeds and leaves the race."""
    from pipeline.search.racing import Race, RaceSettings, run_race

    asked = []

    def train(label, seed):
        asked.append((label, seed))
        if (label, seed) == ("b", 0):
            return None
        return Predictions(np.arange(4), np.array([0, 1, 0, 1]), np.full((4, 2), 0.5))

    race = Race(RaceSettings(2, 3, None, 0.01, 0.05, 0.2), "val_accuracy", [0, 1, 2])
    run_race(race, ["a", "b"], train)
    assert ("b", 1) not in asked and "b" in race.dropped
    assert race.pairs["b"].verdict == "failed"


def test_a_cluster_round_whose_racers_leave_an_assignment_open_stops_in_one_line(tmp_path):
    """Racers that all ended with an assignment nobody trained: the race stops with a
    line naming it, instead of dropping that configuration as failed."""
    from types import SimpleNamespace

    import keras_tuner as kt
    from omegaconf import OmegaConf

    from pipeline.errors import SearchError
    from pipeline.search.seed_race import _on_racers

    hp = kt.HyperParameters()
    hp.Choice("units", [8, 16])
    cfg = OmegaConf.create({"tuner": {"directory": str(tmp_path)}, "cluster": {"n_workers": 2}})
    tracker = SimpleNamespace(finished_replicate=lambda parent, key: None)
    tuner = SimpleNamespace(
        cfg=cfg, tracker=tracker, search_id="s", parent_run_id="p",
        data=SimpleNamespace(fingerprint="f"), trial_number=lambda t: int(t) + 1,
    )  # fmt: skip
    started = []
    train_round = _on_racers(tuner, {"0": SimpleNamespace(hyperparameters=hp)}, started.append)
    with pytest.raises(SearchError, match=r"^race: the racers ended with trial 1 seed 2 not"):
        train_round([("0", 2)])
    assert started == [1]  # one racer for one assignment
