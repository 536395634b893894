"""A growing JSON state saved as a base plus a journal (pipeline.search.state_journal):
what a reader replays is what was saved last, whatever the kill left."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from pipeline.search import state_journal
from pipeline.search.state_journal import (
    GENERATION,
    JournaledState,
    JournalError,
    apply,
    diff,
    journal_path,
    replay,
)

SETS = frozenset({"tried"})


def grow(state: dict, rng: random.Random, step: int) -> dict:
    """The next state, changed the ways keras-tuner's oracle state changes: lists grow at
    the end or get items popped, flat and nested dicts gain, change and lose keys, a
    set-like list is reordered, scalars change, keys come and go."""
    new = copy.deepcopy(state)
    new["order"].append(f"{step:03d}")
    if rng.random() < 0.3 and new["queue"]:
        new["queue"].pop(0)
    else:
        new["queue"].append(step)
    new["runs"][f"{step:03d}"] = 0
    if step > 2:
        new["runs"][f"{rng.randrange(step):03d}"] = rng.randrange(5)
    if rng.random() < 0.2 and len(new["runs"]) > 3:
        new["runs"].pop(next(iter(new["runs"])))
    new["tried"].append(f"h{step}")
    rng.shuffle(new["tried"])
    if rng.random() < 0.2 and len(new["tried"]) > 2:
        new["tried"].remove(new["tried"][0])
    new["display"]["start"][f"{step:03d}"] = f"t{step}"
    new["brackets"] = [{"rounds": [[f"{i:03d}"] for i in range(step % 4)]}]
    new["seed_state"] = rng.randrange(10**6)
    if step % 5 == 0:
        new.pop("maybe", None)
    elif step % 5 == 2:
        new["maybe"] = {"x": step}
    return new


def first_state() -> dict:
    return {
        "order": [],
        "queue": [],
        "runs": {},
        "tried": [],
        "display": {"start": {}, "search": None},
        "brackets": [],
        "seed_state": 1,
    }


def same(a: dict, b: dict) -> bool:
    """Equal, with the set-like list compared as a set."""
    a, b = dict(a), dict(b)
    return set(a.pop("tried")) == set(b.pop("tried")) and a == b


def test_a_diff_applied_through_json_turns_each_state_into_the_next():
    rng = random.Random(0)
    state = first_state()
    for step in range(60):
        new = grow(state, rng, step)
        changes = json.loads(json.dumps(diff(state, new, SETS)))
        rebuilt = copy.deepcopy(state)
        apply(rebuilt, changes)
        assert same(rebuilt, new), step
        state = new
    # an unchanged state needs no line; a reordered set-like list is unchanged
    again = copy.deepcopy(state)
    again["tried"].reverse()
    assert diff(state, again, SETS) == {}


def test_a_changed_entry_costs_a_line_not_the_whole_state():
    state = first_state()
    rng = random.Random(1)
    for step in range(500):
        state = grow(state, rng, step)
    new = grow(state, rng, 500)
    line = json.dumps(diff(state, new, SETS))
    assert len(line) < len(json.dumps(new)) / 20


@pytest.mark.parametrize("min_bytes", [0, state_journal.MIN_JOURNAL_BYTES])
def test_what_a_reader_replays_is_the_last_state_saved(tmp_path, monkeypatch, min_bytes):
    """With the base rewritten whenever the journal outgrows it (min_bytes 0) and with
    the default: after every save, base + journal replay to the state saved."""
    monkeypatch.setattr(state_journal, "MIN_JOURNAL_BYTES", min_bytes)
    base = tmp_path / "oracle.json"
    writer = JournaledState(base, SETS)
    rng = random.Random(2)
    state = first_state()
    generations = set()
    for step in range(40):
        state = grow(state, rng, step)
        writer.save(state)
        generations.add(writer.generation)
        read, _, torn = replay(json.loads(base.read_text()), base)
        assert same(read, state) and not torn, step
    assert (len(generations) > 3) == (min_bytes == 0)  # the base was rewritten
    # a second writer taking over from the files goes on where the first stopped
    again = JournaledState(base, SETS)
    assert same(again.load(json.loads(base.read_text())), state)
    state = grow(state, rng, 40)
    again.save(state)
    assert same(replay(json.loads(base.read_text()), base)[0], state)


def test_a_line_cut_short_by_a_kill_is_the_save_that_never_returned(tmp_path):
    base = tmp_path / "oracle.json"
    writer = JournaledState(base, SETS)
    rng = random.Random(3)
    before = grow(first_state(), rng, 0)
    writer.save(before)
    writer.save(after := grow(before, rng, 1))
    journal = journal_path(base)
    whole = journal.read_bytes()
    journal.write_bytes(whole[: len(whole) // 2])  # the kill, mid-line
    read, _, torn = replay(json.loads(base.read_text()), base)
    assert torn and same(read, before)
    # the next writer folds the cut line away before appending to the journal
    again = JournaledState(base, SETS)
    assert same(again.load(json.loads(base.read_text())), before)
    again.save(after)
    read, _, torn = replay(json.loads(base.read_text()), base)
    assert not torn and same(read, after)


def test_lines_of_an_older_generation_are_skipped(tmp_path):
    """A kill between writing a new base and emptying the journal leaves lines the base
    already holds: replaying them again would append list items twice."""
    base = tmp_path / "oracle.json"
    writer = JournaledState(base, SETS)
    rng = random.Random(4)
    state = grow(first_state(), rng, 0)
    writer.save(state)
    state = grow(state, rng, 1)
    writer.save(state)
    old_lines = journal_path(base).read_bytes()
    assert old_lines
    writer.rewrite(state)
    journal_path(base).write_bytes(old_lines)  # as if the kill came before the emptying
    read, _, _ = replay(json.loads(base.read_text()), base)
    assert same(read, state) and read["order"] == ["000", "001"]


def test_a_failed_append_makes_the_next_save_rewrite_the_base(tmp_path, monkeypatch):
    base = tmp_path / "oracle.json"
    writer = JournaledState(base, SETS)
    rng = random.Random(5)
    state = grow(first_state(), rng, 0)
    writer.save(state)
    state = grow(state, rng, 1)

    def killed(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(OSError, match="disk gone"):
        writer.save(state)  # the line is on disk, unconfirmed
    monkeypatch.undo()
    state = grow(state, rng, 2)
    writer.save(state)
    read, _, _ = replay(json.loads(base.read_text()), base)
    assert same(read, state) and read["order"] == ["000", "001", "002"]  # nothing twice


def test_a_journal_broken_before_its_last_line_is_an_error(tmp_path):
    base = tmp_path / "oracle.json"
    writer = JournaledState(base, SETS)
    rng = random.Random(6)
    state = first_state()
    for step in range(3):
        state = grow(state, rng, step)
        writer.save(state)
    lines = journal_path(base).read_bytes().split(b"\n")
    lines[0] = lines[0][:10]
    journal_path(base).write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="line 1 is not JSON"):
        replay(json.loads(base.read_text()), base)


def test_a_base_keras_tuner_wrote_starts_a_journal(tmp_path):
    base = tmp_path / "oracle.json"
    state = grow(first_state(), random.Random(7), 0)
    base.write_text(json.dumps(state))  # no generation: keras-tuner's own file
    writer = JournaledState(base, SETS)
    assert same(writer.load(json.loads(base.read_text())), state)
    assert GENERATION in json.loads(base.read_text())
