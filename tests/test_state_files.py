"""keras-tuner's state files survive a process dying mid-write (pipeline.search.state_files).

A kill cannot be aimed at the few microseconds of a write, so the write is made to fail
at its last step (the flush to disk) instead: what a reader finds then is what a kill
there would leave.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import keras_tuner as kt
import pytest

from pipeline.config import TunerKind
from pipeline.errors import SearchError
from pipeline.search import state_journal
from pipeline.search.oracles import make_oracle
from pipeline.search.state_files import check_state_files
from pipeline.search.state_journal import GENERATION


def new_oracle(store, kind: str) -> kt.Oracle:
    cfg = store.compose(f"tuner={kind}", "tuner.max_trials=4")
    oracle = make_oracle(cfg.tuner)
    oracle._set_project_dir(str(store.path / "tuner"), "p")  # as keras-tuner's Tuner does
    return oracle


def space() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Choice("units", [8, 16, 32])
    return hp


def journal_of(project) -> Path:
    return project / "oracle.json.journal"


@pytest.mark.parametrize("kind", [k.value for k in TunerKind])
def test_a_state_write_cut_short_leaves_the_previous_state_whole(store, monkeypatch, kind):
    oracle = new_oracle(store, kind)
    oracle.update_space(space())
    trial = oracle.create_trial("tuner0")
    objective = oracle.objective.name
    oracle.update_trial(trial.trial_id, {objective: 0.5}, step=0)
    project = store.path / "tuner" / "p"
    files = [project / "oracle.json", project / f"trial_{trial.trial_id}" / "trial.json"]
    before = [f.read_text() for f in files]
    journal = journal_of(project).read_bytes()

    def killed(fd):
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(OSError, match="killed mid-write"):
        oracle.update_trial(trial.trial_id, {objective: 0.9}, step=1)  # rewrites trial.json
    monkeypatch.undo()
    assert [f.read_text() for f in files] == before
    assert all(json.loads(text) for text in before)
    assert not [p.name for p in project.rglob("*") if p.name.endswith(".tmp")]

    # The oracle's own save: a journal line, cut short by the kill.
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    oracle.flush()
    grown = journal_of(project).read_bytes()
    assert len(grown) > len(journal) and files[0].read_text() == before[0]
    journal_of(project).write_bytes(grown[: (len(journal) + len(grown)) // 2])
    check_state_files(project, "p")  # a last line cut short is a save that never returned
    reloaded = new_oracle(store, kind)
    reloaded.reload()
    again = reloaded.trials[trial.trial_id]
    assert again.status == "COMPLETED"  # its trial.json was written whole before the line
    assert again.hyperparameters.values["units"] == trial.hyperparameters.values["units"]
    assert reloaded._retry_queue == [trial.trial_id]  # still ongoing: the resume runs it


def comparable(oracle: kt.Oracle) -> dict:
    """The oracle's saved state, less what a reload changes on purpose (ongoing trials
    go to the retry queue) and with keras-tuner's set as a set."""
    state = json.loads(json.dumps(oracle.get_state()))
    state["tried_so_far"] = sorted(state["tried_so_far"])
    for key in ("ongoing_trials", "retry_queue"):
        state.pop(key)
    return state


@pytest.mark.parametrize("kind", [k.value for k in TunerKind])
def test_an_oracle_reloads_the_state_it_saved_from_base_and_journal(store, monkeypatch, kind):
    """Six trials, the base rewritten whenever the journal outgrows it: after each trial
    a fresh oracle reloaded from the files holds the live oracle's state."""
    monkeypatch.setattr(state_journal, "MIN_JOURNAL_BYTES", 0)
    oracle = new_oracle(store, kind)
    oracle.update_space(space())
    objective = oracle.objective.name
    project = store.path / "tuner" / "p"
    generations = set()
    for i in range(6):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        oracle.update_trial(trial.trial_id, {objective: 0.1 * i}, step=0)
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        oracle.flush()
        generations.add(json.loads((project / "oracle.json").read_text())[GENERATION])
        reloaded = new_oracle(store, kind)
        reloaded.reload()
        assert comparable(reloaded) == comparable(oracle), i
    assert len(generations) > 1


def test_an_ended_trial_is_written_by_the_next_save_or_run_again(store):
    """end_trial leaves oracle.json to the next create_trial (or flush): a kill between
    the two leaves the trial ongoing, and the resume runs it again."""
    oracle = new_oracle(store, "random")
    oracle.update_space(space())
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {oracle.objective.name: 0.5}, step=0)
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    killed_here = new_oracle(store, "random")
    killed_here.reload()
    assert killed_here._retry_queue == [trial.trial_id]
    assert killed_here.trials[trial.trial_id].status == "COMPLETED"  # its trial.json
    oracle.create_trial("tuner0")  # writes the state, the end included
    resumed = new_oracle(store, "random")
    resumed.reload()
    assert trial.trial_id in resumed.end_order and trial.trial_id not in resumed._retry_queue


def test_a_journal_broken_before_its_last_line_refuses_the_resume(store):
    oracle = new_oracle(store, "random")
    oracle.update_space(space())
    for _ in range(3):
        oracle.create_trial(f"tuner{_}")
    project = store.path / "tuner" / "p"
    lines = journal_of(project).read_bytes().split(b"\n")
    assert len(lines) > 2
    lines[0] = lines[0][:-5]
    journal_of(project).write_bytes(b"\n".join(lines))
    with pytest.raises(SearchError, match=r"cannot resume 'p'.*oracle\.json\.journal"):
        check_state_files(project, "p")


def test_the_failure_limit_is_checked_as_keras_tuner_counts(store):
    """From the newest trial back (constant time) against keras-tuner's walk over every
    ended trial: the same verdict after each trial ends, over 40 random histories."""
    oracle = new_oracle(store, "random")
    raised_somewhere = 0
    for seed in range(40):
        rng = random.Random(seed)
        oracle.trials, oracle.end_order = {}, []
        oracle.max_consecutive_failed_trials = rng.choice([1, 2, 3])
        for i in range(15):
            status = "FAILED" if rng.random() < 0.6 else rng.choice(["COMPLETED", "INVALID"])
            trial_id = f"{i:02d}"
            oracle.trials[trial_id] = kt.engine.trial.Trial(space(), trial_id, status)
            oracle.trials[trial_id].message = f"error {i}"
            oracle.end_order.append(trial_id)
            try:
                kt.Oracle._check_consecutive_failures(oracle)
            except RuntimeError as err:
                with pytest.raises(RuntimeError) as raised:
                    oracle._check_consecutive_failures()
                assert str(raised.value) == str(err)
                raised_somewhere += 1
                break
            oracle._check_consecutive_failures()
    assert raised_somewhere > 20
