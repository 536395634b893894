"""A race's round on a cluster: the assignments (configuration, seed) in one file that the
launcher's racer processes take one at a time, under a file lock, as keras-tuner's
workers take trials from the chief. Each entry records who took it and how it ended (the
replicate's run, or failed); a racer that died gives its unfinished entries back when
the launcher restarts it under the same name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from pipeline.search.state_journal import write_text_atomically


@dataclass
class Assignment:
    trial_id: str
    seed: int
    racer: str | None = None  # who took it
    run_id: str | None = None  # its FINISHED replicate run, once trained
    failed: bool = False

    @property
    def open(self) -> bool:
        return self.run_id is None and not self.failed


def queue_path(directory: str, name: str) -> Path:
    """Beside the search's keras-tuner project, in the cluster's job folder."""
    return Path(directory).resolve() / f"{name}.cluster" / "race_round.json"


class RaceQueue:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> list[Assignment]:
        return [Assignment(**a) for a in json.loads(self.path.read_text())["assignments"]]

    def _write(self, items: list[Assignment]) -> None:
        write_text_atomically(self.path, json.dumps({"assignments": [asdict(a) for a in items]}))

    def start_round(self, assignments: list[tuple[str, int]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._write([Assignment(str(t), int(s)) for t, s in assignments])

    def entries(self) -> list[Assignment]:
        with self._lock:
            return self._read()

    def take(self, racer: str) -> Assignment | None:
        """The next assignment nobody took, now this racer's; None when all are taken."""
        with self._lock:
            items = self._read()
            for item in items:
                if item.racer is None:
                    item.racer = racer
                    self._write(items)
                    return item
        return None

    def give_back(self, racer: str) -> int:
        """A restarted racer's first step: what its dead predecessor took and did not end
        is open to any racer again."""
        with self._lock:
            items = self._read()
            back = [i for i in items if i.racer == racer and i.open]
            for item in back:
                item.racer = None
            if back:
                self._write(items)
            return len(back)

    def end(self, taken: Assignment, run_id: str | None) -> None:
        """`run_id`: its FINISHED run; None: it failed."""
        with self._lock:
            items = self._read()
            for item in items:
                if (item.trial_id, item.seed, item.racer) == (
                    taken.trial_id, taken.seed, taken.racer,
                ):  # fmt: skip
                    item.run_id, item.failed = run_id, run_id is None
            self._write(items)
