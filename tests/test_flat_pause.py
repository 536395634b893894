"""The pause between trials stays flat over a long search: the per-trial lookups that
grew with it, and the bench that measures it side by side (`bench pause`)."""

from __future__ import annotations

import threading

import numpy as np

from pipeline.bench.pause import Turns, compare
from pipeline.search.tuner import TrackedTuner
from pipeline.tracking.schema import Status


def bare_tuner() -> TrackedTuner:
    """Only the row bookkeeping of a tuner (no oracle, store or TensorFlow)."""
    tuner = object.__new__(TrackedTuner)
    tuner.rows = []
    tuner._indexed, tuner._indexed_count, tuner._rows_by_key = None, 0, {}
    tuner.parent_run_id = None
    return tuner


def test_the_finished_replicate_lookup_sees_every_row_as_it_changes():
    tuner = bare_tuner()
    assert tuner._finished_before("a") is None
    failed = {"config_hash": "a", "status": Status.FAILED}
    running = {"config_hash": "a", "status": Status.RUNNING}
    tuner.rows += [failed, running, {"config_hash": "b", "status": Status.FINISHED}]
    assert tuner._finished_before("a") is None  # rows appended after the last lookup
    assert tuner._finished_before("b") is tuner.rows[2]
    running["status"] = Status.FINISHED  # a row finishes in place
    assert tuner._finished_before("a") is running
    tuner.rows = [{"config_hash": "c", "status": Status.FINISHED}]  # a resume's rows
    assert tuner._finished_before("a") is None
    assert tuner._finished_before("c") is tuner.rows[0]


def test_the_two_searches_take_turns_trial_by_trial_from_the_shared_window():
    """The late side runs 6 trials, the last 3 in turns with the early side's 3: every
    trial of the window starts only after the other side's previous one."""
    late_turn, early_turn = threading.Semaphore(0), threading.Semaphore(0)
    log: list[tuple[str, int]] = []

    def side(name, trials, first_shared, mine, theirs):
        turns = Turns(mine, theirs, first_shared)
        try:
            for i in range(1, trials + 1):
                turns.before_trial()
                log.append((name, i))
        finally:
            turns.done()

    threads = [
        threading.Thread(target=side, args=("late", 6, 4, late_turn, early_turn)),
        threading.Thread(target=side, args=("early", 3, 1, early_turn, late_turn)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert log[:3] == [("late", 1), ("late", 2), ("late", 3)]
    window = [name for name, _ in log[3:]]
    assert window == ["early", "late"] * 3


def test_the_growth_is_the_ratio_of_medians_with_its_interval():
    rng = np.random.default_rng(0)
    early = 10 + rng.exponential(1.0, 50)
    grown = compare(early, 1.2 * (10 + rng.exponential(1.0, 50)))
    assert 1.12 < grown.ratio < 1.28 and grown.low > 1.0 and grown.low < grown.ratio < grown.high
    flat = compare(early, 10 + rng.exponential(1.0, 50))
    assert flat.low < 1.0 < flat.high
