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

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import keras_tuner as kt

from pipeline.errors import SearchError


def write_json_atomically(path: str | os.PathLike[str], obj: Any) -> str:
    """`keras_tuner.utils.save_json`, atomic: returns the JSON text like it does."""
    text = json.dumps(obj)
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
    return text


class AtomicStateOracle(kt.Oracle):
    """Mixed in before any keras-tuner oracle: its two writers, made atomic."""

    def save(self) -> None:
        write_json_atomically(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial: kt.engine.trial.Trial) -> None:
        path = Path(self._get_trial_dir(trial.trial_id)) / "trial.json"
        write_json_atomically(path, trial.get_state())


@functools.cache
def atomic_state(oracle_class: type[kt.Oracle]) -> type[kt.Oracle]:
    """`oracle_class` with atomic state files (same name, so keras-tuner's messages read
    as before)."""
    return type(oracle_class.__name__, (AtomicStateOracle, oracle_class), {})


def check_state_files(project_dir: str | os.PathLike[str], name: str) -> None:
    """Before reloading a search: every state file keras-tuner will read parses, or one
    line names the one that does not (left by a kill before these writes were atomic)."""
    root = Path(project_dir)
    for path in sorted([*root.glob("*.json"), *root.glob("trial_*/trial.json")]):
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SearchError(
                f"cannot resume '{name}': keras-tuner's state file {path} is unreadable "
                f"({type(err).__name__}: {err}); it was cut short by a kill; add "
                "search.force_new=true to start the search again"
            ) from None
