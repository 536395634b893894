"""A JSON state that grows, saved in time that does not grow: a base file plus a journal.

keras-tuner's oracle state lists every trial's id and hash, and keras-tuner rewrites the
whole of it at every save, so a save at trial 500 writes ~50 KB where one at trial 10
wrote 2 KB, and the pause between trials grows with the search. Here a save appends only
what changed since the last one (a line of JSON, flushed to disk) to `<base>.journal`; the
base (the same JSON keras-tuner writes, plus a generation key) is rewritten only once the
journal outgrows it, so the bytes written per save stay constant on average.

A reader takes the base and replays the journal lines of the base's generation: lines of
an older generation were folded into the base by a rewrite that a kill interrupted before
it emptied the journal. A last line cut short is a save that never returned, and is
dropped.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

GENERATION = "journal_generation"  # the base's key naming the journal lines that apply
MIN_JOURNAL_BYTES = 64 * 1024  # below this, never rewrite the base


class JournalError(ValueError):
    """A journal line other than the last is not JSON: not left by a kill mid-save."""


def diff(old: dict[str, Any], new: dict[str, Any], sets: frozenset[str]) -> dict[str, Any]:
    """What turns `old` into `new`, key by key: a list that grew at its end as its new
    items, a dict as its own diff, a key in `sets` (a list whose order means nothing) as
    the items added and removed, anything else whole."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            out[key] = ["set", value]
            continue
        was = old[key]
        if was == value:
            continue
        if key in sets and isinstance(was, list) and isinstance(value, list):
            before, after = set(was), set(value)
            if before != after:
                out[key] = ["sets", sorted(after - before), sorted(before - after)]
        elif isinstance(was, list) and isinstance(value, list) and value[: len(was)] == was:
            out[key] = ["extend", value[len(was) :]]
        elif isinstance(was, dict) and isinstance(value, dict):
            out[key] = ["dict", _dict_diff(was, value)]
        else:
            out[key] = ["set", value]
    for key in old.keys() - new.keys():
        out[key] = ["drop"]
    return out


def _dict_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`diff` of two dicts; flat ones (keras-tuner's id -> hash, id -> run count) through
    set operations on their items, in C rather than a Python loop over every trial."""
    try:
        changed = new.items() - old.items()
    except TypeError:  # unhashable values (nested dicts, lists): key by key
        return diff(old, new, frozenset())
    out: dict[str, Any] = {key: ["set", value] for key, value in changed}
    for key in old.keys() - new.keys():
        out[key] = ["drop"]
    return out


def apply(state: dict[str, Any], changes: dict[str, Any]) -> None:
    """Apply a `diff` to `state` in place."""
    for key, (op, *args) in changes.items():
        if op == "set":
            state[key] = args[0]
        elif op == "extend":
            state[key].extend(args[0])
        elif op == "sets":
            added, removed = args
            gone = set(removed)
            state[key] = [x for x in state[key] if x not in gone] + added
        elif op == "dict":
            apply(state[key], args[0])
        elif op == "drop":
            state.pop(key, None)
        else:
            raise JournalError(f"unknown journal operation {op!r}")


def journal_path(base: Path) -> Path:
    return base.with_name(base.name + ".journal")


def read_lines(base: Path, generation: str | None) -> tuple[list[dict[str, Any]], int, bool]:
    """The journal's changes of `generation`, the journal's length in bytes, and whether
    its last line was cut short."""
    path = journal_path(base)
    if generation is None or not path.exists():
        return [], 0, False
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # a complete journal ends with a newline
    changes = []
    for i, line in enumerate(lines[:-1]):
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise JournalError(f"{path} line {i + 1} is not JSON ({err})") from None
        if entry.get("generation") == generation:
            changes.append(entry["changes"])
    return changes, len(raw), torn


def replay(base_state: dict[str, Any], base: Path) -> tuple[dict[str, Any], int, bool]:
    """The state saved last: `base_state` (the base file's JSON) with its journal applied;
    also the journal's length and whether its last line was cut short."""
    state = dict(base_state)
    generation = state.pop(GENERATION, None)
    changes, length, torn = read_lines(base, generation)
    for change in changes:
        apply(state, change)
    return state, length, torn


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """A temporary file beside `path`, flushed to disk, then renamed over it: a reader
    sees the old text or the new one, whenever a kill comes."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JournaledState:
    """One state file written as a base plus a journal (see the module docstring).

    `sets` names the top-level keys whose lists are sets (keras-tuner's `tried_so_far`
    comes from a Python set, so its order changes from save to save)."""

    def __init__(self, base: Path, sets: frozenset[str] = frozenset()):
        self.base = Path(base)
        self.sets = sets
        self.written: dict[str, Any] | None = None  # the state on disk (base + journal)
        self.generation: str | None = None
        self.base_bytes = 0
        self.journal_bytes = 0

    def save(self, state: dict[str, Any]) -> None:
        """Append what changed since the last save, or rewrite the base when the journal
        has outgrown it (or nothing is known of the files yet)."""
        if self.written is None or self.journal_bytes > max(self.base_bytes, MIN_JOURNAL_BYTES):
            self.rewrite(state)
            return
        changes = diff(self.written, state, self.sets)
        if not changes:
            return
        line = json.dumps({"generation": self.generation, "changes": changes}) + "\n"
        try:
            with open(journal_path(self.base), "a") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            self.written = None  # the line may be on disk or not: the next save rewrites
            raise
        self.journal_bytes += len(line.encode())
        apply(self.written, json.loads(line)["changes"])  # fresh objects: no aliasing

    def rewrite(self, state: dict[str, Any]) -> None:
        """The whole state as a new base of a new generation, then an empty journal (a kill
        in between leaves lines of the old generation, which readers skip)."""
        self.written = None  # until both files are written: a failure here rewrites again
        self.generation = uuid.uuid4().hex
        text = json.dumps({**state, GENERATION: self.generation})
        write_text_atomically(self.base, text)
        write_text_atomically(journal_path(self.base), "")
        self.written = json.loads(text)
        self.written.pop(GENERATION)
        self.base_bytes, self.journal_bytes = len(text.encode()), 0

    def load(self, base_state: dict[str, Any]) -> dict[str, Any]:
        """The saved state from the base file's JSON, and this writer set to go on from
        it (a journal whose last line was cut short is folded into a new base first)."""
        state, length, torn = replay(base_state, self.base)
        if torn or GENERATION not in base_state:  # or a base keras-tuner wrote: no journal
            self.rewrite(state)
        else:
            self.generation = base_state[GENERATION]
            self.written = json.loads(json.dumps(state))  # set_state keeps `state`'s lists
            self.base_bytes = len(json.dumps(base_state).encode())
            self.journal_bytes = length
        return state
