"""keras-tuner's state files survive a process dying mid-write (pipeline.search.state_files).

A kill cannot be aimed at the few microseconds of a write, so the write is made to fail
at its last step (the flush to disk) instead: what a reader finds then is what a kill
there would leave.
"""

from __future__ import annotations

import json
import os

import keras_tuner as kt
import pytest

from pipeline.config import TunerKind
from pipeline.search.oracles import make_oracle


def new_oracle(store, kind: str) -> kt.Oracle:
    cfg = store.compose(f"tuner={kind}", "tuner.max_trials=4")
    oracle = make_oracle(cfg.tuner)
    oracle._set_project_dir(str(store.path / "tuner"), "p")  # as keras-tuner's Tuner does
    return oracle


def space() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Choice("units", [8, 16, 32])
    return hp


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

    def killed(fd):
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(OSError, match="killed mid-write"):
        oracle.update_trial(trial.trial_id, {objective: 0.9}, step=1)  # rewrites trial.json
    with pytest.raises(OSError, match="killed mid-write"):
        oracle.save()
    monkeypatch.undo()

    assert [f.read_text() for f in files] == before
    assert all(json.loads(text) for text in before)
    assert not [p.name for p in project.rglob("*") if p.name.endswith(".tmp")]
    reloaded = new_oracle(store, kind)
    reloaded.reload()
    again = reloaded.trials[trial.trial_id]
    assert again.metrics.get_best_value(objective) == 0.5
    assert again.hyperparameters.values["units"] == trial.hyperparameters.values["units"]
