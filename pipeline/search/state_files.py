"""keras-tuner's state files (oracle.json, trial_*/trial.json, the tuner's own), written
whole or not at all.

keras-tuner writes them in place (`open(path, "w")`, then the text), and the chief rewrites
a running trial's trial.json at every epoch. A process killed inside that window (the
machine failing, a cluster killed with all its processes) leaves a truncated file, and the
resumed search cannot reload: `JSONDecodeError` in the chief. Here each file is written to
a temporary file beside it, flushed to disk, then renamed over the old one, so a reader
sees either the old state or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras_tuner as kt

from pipeline.errors import SearchError
from pipeline.search.state_journal import (
    GENERATION,
    JournaledState,
    JournalError,
    journal_path,
    read_lines,
    write_text_atomically,
)

SET_KEYS = frozenset({"tried_so_far"})  # keras-tuner saves a Python set as a list


def write_json_atomically(path: str | os.PathLike[str], obj: Any) -> str:
    """`keras_tuner.utils.save_json`, atomic: returns the JSON text like it does."""
    text = json.dumps(obj)
    write_text_atomically(path, text)
    return text


class AtomicStateOracle(kt.Oracle):
    """Mixed in before any keras-tuner oracle: its two writers, made atomic; the oracle
    state saved as a base plus a journal of changes (`state_journal`: a save costs the same
    at trial 500 as at trial 5), and once a trial instead of twice."""

    _deferring = False  # inside end_trial: a save only marks the state unsaved
    _unsaved = False
    _journal: JournaledState | None = None

    def _state_file(self) -> JournaledState:
        if self._journal is None:
            self._journal = JournaledState(Path(self._get_oracle_fname()), SET_KEYS)
        return self._journal

    def save(self) -> None:
        if self._deferring:
            self._unsaved = True
            return
        self._state_file().save(self.get_state())
        self._unsaved = False

    def set_state(self, state: dict[str, Any]) -> None:
        """keras-tuner's reload hands over oracle.json: its journal is replayed first."""
        super().set_state(self._state_file().load(state))

    @kt.synchronized
    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        """keras-tuner's `end_trial`, less its write of oracle.json: that file holds every
        trial's id and hash, so each write costs more as the search grows, and the next
        `create_trial` writes it again before the next trial starts (`flush` writes it
        when no trial follows). The trial's own trial.json is written here as before. A
        kill in between leaves the trial ongoing in oracle.json: the resumed search runs
        it again, and its finished runs are read from the store, not retrained
        (`TrackedTuner._finished_before`)."""
        self._deferring = True
        try:
            super().end_trial(trial)
        finally:
            self._deferring = False

    def flush(self) -> None:
        """Write the state an `end_trial` left unsaved (the search stopping, the chief's
        server done)."""
        if self._unsaved:
            self.save()

    def _save_trial(self, trial: kt.engine.trial.Trial) -> None:
        path = Path(self._get_trial_dir(trial.trial_id)) / "trial.json"
        write_json_atomically(path, trial.get_state())


def check_state_files(project_dir: str | os.PathLike[str], name: str) -> None:
    """Before reloading a search: every state file keras-tuner will read parses (and the
    oracle's journal, but for a last line cut short by a kill mid-save), or one line
    names the one that does not (left by a kill before these writes were atomic)."""
    root = Path(project_dir)
    for path in sorted([*root.glob("*.json"), *root.glob("trial_*/trial.json")]):
        try:
            state = json.loads(path.read_text())
            if path.name == "oracle.json":
                read_lines(path, state.get(GENERATION))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, JournalError) as err:
            shown = journal_path(path) if isinstance(err, JournalError) else path
            raise SearchError(
                f"cannot resume '{name}': keras-tuner's state file {shown} is unreadable "
                f"({type(err).__name__}: {err}); it was cut short by a kill; add "
                "search.force_new=true to start the search again"
            ) from None
