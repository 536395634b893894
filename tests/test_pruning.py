"""#16: Optuna's pruners stop hopeless trials; pruned runs are finished, marked, and
never re-run. Toy curves without TensorFlow first, then a real search, killed with
kill -9 and resumed."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from types import SimpleNamespace

import pytest

from pipeline.search.pruning import (
    Curve,
    PruningCallback,
    PruningMirror,
    curves_from_runs,
    make_pruner,
)
from pipeline.tracking import TrialRun
from tests.conftest import PROJECT_ROOT
from tests.forked_cli import popen_python


def mirror(kind: str = "median", objective: str = "val_accuracy", **kw) -> PruningMirror:
    pruner = make_pruner(kind, kw.get("startup", 2), kw.get("warmup", 0))
    return PruningMirror(pruner, objective, per_seed=kind == "wilcoxon")


GOOD = {0: 0.50, 1: 0.70, 2: 0.80, 3: 0.85}


def test_median_pruner_stops_a_curve_clearly_under_the_median():
    m = mirror()
    assert m.add(
        [Curve(f"c{i}", {k: v + i / 100 for k, v in GOOD.items()}, 0.85) for i in range(3)]
    )
    hopeless = m.start("bad")
    assert m.report(hopeless, 0, 0.34)  # far under the median of 0.51 at epoch 0
    m.finish(hopeless, 0.34, pruned=True)
    promising = m.start("fine")
    assert not any(m.report(promising, e, v + 0.05) for e, v in GOOD.items())
    m.finish(promising, 0.9, pruned=False)
    assert {t.state.name for t in m.study.trials} == {"COMPLETE", "PRUNED"}


def test_nothing_is_pruned_before_enough_trials_finished_or_during_warm_up():
    m = mirror(startup=3)
    m.add([Curve("a", GOOD, 0.85)])  # 1 finished < 3 startup trials
    assert not m.report(m.start("x"), 0, 0.0)
    m = mirror(startup=0, warmup=2)
    m.add([Curve("a", GOOD, 0.85), Curve("b", GOOD, 0.85)])
    t = m.start("y")
    assert not m.report(t, 0, 0.0) and not m.report(t, 1, 0.0)  # warm-up epochs
    assert m.report(t, 2, 0.0)


def test_loss_objectives_prune_the_high_curve():
    m = mirror(objective="val_loss")
    m.add([Curve(f"c{i}", {0: 1.0, 1: 0.6}, 0.6) for i in range(3)])
    assert m.report(m.start("bad"), 1, 1.1)
    assert not m.report(m.start("good"), 1, 0.5)


def test_the_same_replicate_is_added_once():
    m = mirror()
    curve = Curve("c", GOOD, 0.85)
    assert m.add([curve, curve]) == 1 and m.add([curve]) == 0
    assert m.add([Curve("nan", GOOD, float("nan"))]) == 0


def test_curves_rebuild_from_stored_runs():
    runs = [
        TrialRun("r1", "t1", "1", "FINISHED", 0, 1, config_hash="k1", seed=0, group="g",
                 metrics={"val_accuracy": 0.8, "epochs_trained": 2}),
        TrialRun("r2", "t2", "1", "FINISHED", 0, 1, config_hash="k2", seed=1, group="g",
                 metrics={"val_accuracy": 0.4, "epochs_trained": 1}, pruned=True),
    ]  # fmt: skip
    histories = {"r1": {0: 0.6, 1: 0.8, 2: 0.8}, "r2": {0: 0.4, 1: 0.4}}
    curves = curves_from_runs(runs, histories.__getitem__, "val_accuracy", per_seed=False)
    # The restored model's score (logged one step after the last epoch) is not a step.
    assert [(c.key, c.values, c.pruned) for c in curves] == [
        ("k1", {0: 0.6, 1: 0.8}, False),
        ("k2", {0: 0.4}, True),
    ]
    by_seed = curves_from_runs(runs, histories.__getitem__, "val_accuracy", per_seed=True)
    assert [(c.key, c.values) for c in by_seed] == [("group:g", {0: 0.8, 1: 0.4})]


def test_wilcoxon_skips_the_seeds_of_a_configuration_that_loses_on_every_seed():
    m = mirror("wilcoxon")
    best = m.start("group:best")
    for seed in range(8):
        m.report(best, seed, 0.90 + seed / 1000)
    m.finish(best, 0.9, pruned=False)
    worse = m.start("group:worse")
    decisions = [m.report(worse, seed, 0.60) for seed in range(8)]
    assert any(decisions) and not decisions[0]  # never on the first seed alone


def test_the_callback_stops_training_and_says_when():
    m = mirror()
    m.add([Curve(f"c{i}", GOOD, 0.85) for i in range(3)])
    callback = PruningCallback(m, "k")
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.set_params({"epochs": 4})
    callback.on_epoch_end(0, {"val_accuracy": 0.52})
    assert callback.pruned_at is None and not callback.model.stop_training
    callback.on_epoch_end(1, {"val_accuracy": 0.2})
    assert callback.pruned_at == 1 and callback.model.stop_training
    callback.close(0.52)
    assert m.study.trials[-1].state.name == "PRUNED" and "k" in m.known


def test_a_prune_after_the_last_epoch_is_a_full_trial_not_a_pruned_one():
    m = mirror()
    m.add([Curve(f"c{i}", GOOD, 0.85) for i in range(3)])
    callback = PruningCallback(m, "last")
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.set_params({"epochs": 2})
    callback.on_epoch_end(0, {"val_accuracy": 0.52})
    callback.on_epoch_end(1, {"val_accuracy": 0.2})  # the pruner would stop it: too late
    assert callback.pruned_at is None and not callback.model.stop_training
    callback.close(0.52)
    assert m.study.trials[-1].state.name == "COMPLETE"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("tuner=hyperband tuner.pruning=median", "Hyperband prunes by itself"),
        ("tuner.pruning=wilcoxon", "needs search.seeds"),
    ],
)
def test_bad_pruning_settings_fail_in_one_line(store, override, needle):
    from pipeline.config import ConfigError
    from pipeline.runtime.checks import validate_config

    with pytest.raises(ConfigError, match=needle):
        validate_config(store.compose(*override.split()))


def test_an_unknown_pruner_fails_while_composing_naming_the_key(store):
    with pytest.raises(Exception, match=r"tuner\.pruning") as err:  # the schema's enum
        store.compose("tuner.pruning=sometimes")
    assert "median" in str(err.value.__cause__)  # and says which names exist


# A grid whose second configuration cannot learn: the pruner must stop it after the
# warm-up epoch, the first (and third) train on.
PRUNING_SEARCH = [
    "+experiment=quick",
    "tuner=grid",
    "tuner.max_trials=3",
    "tuner.pruning=median",
    "tuner.pruning_startup_trials=1",
    "tuner.pruning_warmup_epochs=1",
    "train.epochs=8",  # long enough for kill -9 to land inside the third trial
    "train.early_stopping.enabled=false",
    "data.synthetic.n_examples=900",
    "~search_space.dropout",
    "~search_space.learning_rate",
    "search_space.pooling.values=[mean]",
    "+search_space.learning_rate={type: choice, values: [0.01, 0.0000001, 0.02]}",
    "attention.enabled=false",
]


@pytest.mark.e2e
def test_a_pruned_trial_is_finished_marked_and_not_rerun_after_kill_9(store, capsys):
    from pipeline.search import run_search
    from pipeline.search.outcome import summary_lines
    from tests.test_lifecycle import runs_of, wait_for_running_trial

    search = [*PRUNING_SEARCH, "attention.enabled=true"]
    proc = popen_python(
        ["-m", "pipeline.search", "search.name=prune", *search, *store.overrides],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for_running_trial(store.path, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    outcome = run_search(store.compose("search.name=prune", *search))
    assert "resumed" in capsys.readouterr().out
    runs = runs_of(store.path)
    children = [r for r in runs if r.data.tags["kind"] == "trial"]
    bad = [c for c in children if c.data.params["train.learning_rate"] == "1e-07"]
    assert len(bad) == 1  # pruned before the crash, not re-run after it
    bad = bad[0]
    assert bad.info.status == "FINISHED" and bad.data.tags["pruned"] == "true"
    assert bad.data.tags["pruned_epoch"] == "2" and bad.data.metrics["epochs_trained"] == 2
    finished = [c for c in children if c.info.status == "FINISHED"]
    # Pruned trials skip the attention diagnostics; a trial that trained to the end has them.
    pruned = [c for c in finished if c.data.tags.get("pruned") == "true"]
    assert bad in pruned and len(pruned) < len(finished)
    assert all(("diagnostics_seconds" in c.data.metrics) == (c not in pruned) for c in finished)
    assert set(Counter(c.data.tags["config_hash"] for c in finished).values()) == {1}
    assert len(finished) == 3  # and the interrupted third trial re-run once
    assert outcome.best["learning_rate"] != 1e-07
    row = outcome.trials.set_index("trial").loc[int(bad.data.tags["trial_number"])]
    assert row["pruned"] == 2
    summary = "\n".join(summary_lines(outcome, "val_accuracy", 5, 3))
    assert "pruned) by val_accuracy" in summary and "pruned" in summary.splitlines()[2]

    # Reproduced, the pruned trial trains the epochs it trained, and matches.
    from pipeline import reproduce

    capsys.readouterr()
    assert reproduce.main([bad.info.run_id, *store.overrides]) == 0
    printed = capsys.readouterr().out
    assert "pruned after epoch 2" in printed and f"match: metrics of {bad.info.run_id}" in printed


def test_every_pruner_and_tuner_name_of_the_schema_has_one_factory():
    from pipeline.config import PrunerKind, TunerKind
    from pipeline.search.oracles import ORACLES
    from pipeline.search.pruning import PRUNERS, make_pruner

    assert set(PRUNERS) == set(PrunerKind) - {PrunerKind.none}
    assert set(ORACLES) == set(TunerKind)
    assert make_pruner("none", 1, 1) is None
    assert type(make_pruner("median", 2, 1)).__name__ == "MedianPruner"


class RecordedStore:
    """Finished runs with their end times and curves, as the tracker returns them."""

    def __init__(self):
        self.runs: list[TrialRun] = []
        self.histories: dict[str, dict[int, float]] = {}
        self.reads = 0

    def finish(self, i: int, curve: dict[int, float], end_ms: int) -> None:
        metrics = {"val_accuracy": curve[max(curve)], "epochs_trained": len(curve)}
        run = TrialRun(f"r{i}", f"t{i}", "1", "FINISHED", 0, end_ms, config_hash=f"k{i}",
                       metrics=metrics)  # fmt: skip
        self.runs.append(run)
        self.histories[run.run_id] = curve

    def trial_runs(self, parent, status=None, ended_since_ms=None):
        self.reads += 1
        found = [r for r in self.runs if ended_since_ms is None or r.end_time >= ended_since_ms]
        self.returned = len(found)
        return found

    def metric_history(self, run_id, key):
        return self.histories[run_id]


def test_the_incremental_mirror_prunes_exactly_as_a_full_re_read():
    import random

    from pipeline.search.tuner import TrackedTuner

    rng = random.Random(0)
    store = RecordedStore()
    cfg = SimpleNamespace(tuner=SimpleNamespace(objective="val_accuracy"))
    incremental = SimpleNamespace(pruning=mirror(startup=2), parent_run_id="p", cfg=cfg,
                                  tracker=store, _pruning_read_ms=None,
                                  reads_store=True)  # fmt: skip
    for i in range(40):
        level = rng.uniform(0.3, 0.9)
        curve = {e: level * (0.6 + 0.1 * e) + rng.uniform(-0.02, 0.02) for e in range(4)}
        end = 1000 + 10 * (i // 3)  # three runs end in the same millisecond now and then
        store.finish(i, curve, end)
        TrackedTuner._sync_pruning(incremental)
        assert store.returned <= 4  # what ended since the last read (and in its ms), not all
    full = SimpleNamespace(pruning=mirror(startup=2), parent_run_id="p", cfg=cfg,
                           tracker=store, _pruning_read_ms=None, reads_store=True)  # fmt: skip
    TrackedTuner._sync_pruning(full)
    assert incremental.pruning.known == full.pruning.known and len(full.pruning.known) == 40
    # the same study: every probe curve is pruned (or not) at the same epoch by both
    for probe in range(20):
        level = 0.3 + 0.03 * probe
        verdicts = []
        for m in (incremental.pruning, full.pruning):
            trial = m.start(f"probe{probe}")
            verdicts.append([m.report(trial, e, level * (0.6 + 0.1 * e)) for e in range(4)])
        assert verdicts[0] == verdicts[1]
    # later reads ask only for runs that ended since the last one read
    assert incremental._pruning_read_ms == 1000 + 10 * (39 // 3)


def test_a_new_search_reads_no_runs_per_trial_and_a_resumed_one_does(store):
    """A new search in one process knows every run under its parent (its rows, the
    pruner's callbacks), so a trial asks the store nothing before training; a resumed
    search asks (a run may have finished before the crash), incrementally."""
    from pipeline.search import run_search
    from pipeline.tracking.store import Tracker

    class Counting(Tracker):
        asked: Counter = Counter()

        def finished_replicate(self, *args, **kwargs):
            self.asked["finished_replicate"] += 1
            return super().finished_replicate(*args, **kwargs)

        def trial_runs(self, *args, **kwargs):
            if "ended_since_ms" in kwargs:
                self.asked["pruning"] += 1  # the pruning mirror's reads (the first: all)
            return super().trial_runs(*args, **kwargs)

    overrides = [
        "+experiment=quick",
        "tuner.pruning=median",
        "train.epochs=2",
        "tracking.log_model=false",
        "attention.enabled=false",
        "search.name=reads",
    ]
    cfg = store.compose(*overrides)
    tracker = Counting.from_config(cfg.tracking)
    tracker.connect()
    outcome = run_search(cfg, tracker=tracker)
    assert len(outcome.trials) == 3 and dict(Counting.asked) == {}
    cfg = store.compose(*overrides, "tuner.max_trials=5")
    tracker = Counting.from_config(cfg.tracking)
    tracker.connect()
    run_search(cfg, tracker=tracker)
    assert Counting.asked["finished_replicate"] == 2 and Counting.asked["pruning"] == 2
