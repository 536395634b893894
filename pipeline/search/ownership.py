"""One live process per search: a lock file beside the search's keras-tuner folder.

Two commands on one `search.name` would each run the oracle, mark the other's live
trial as interrupted and train the same trials twice. The first one holds an OS lock
(`filelock`, released by the kernel when the process dies, even by kill -9) on
`<tuner.directory>/<name>.lock`, outside the folder keras-tuner may delete, and writes
who it is beside it; a second one refuses at once, naming the holder. Generated names
take the next free suffix instead, so two searches started in one second never meet.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.errors import SearchError

_HELD: dict[Path, FileLock] = {}  # per process: a second FileLock on one path would block


def lock_path(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}.lock"


def _owner_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".owner")


def try_hold(directory: str | os.PathLike[str], name: str) -> bool:
    """Hold the search's lock for the rest of this process; False if another holds it."""
    path = lock_path(directory, name).resolve()
    if path in _HELD:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    _HELD[path] = lock
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv[:1] + [a for a in sys.argv[1:] if "://" not in a])[:300],
    }
    _owner_file(path).write_text(json.dumps(owner))
    return True


def holder(directory: str | os.PathLike[str], name: str) -> str:
    """Who holds the search's lock, as the refusal says it."""
    try:
        owner = json.loads(_owner_file(lock_path(directory, name)).read_text())
        return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
    except (OSError, ValueError, KeyError):
        return "another process"


def hold(directory: str | os.PathLike[str], name: str) -> None:
    """Hold the lock of a search the user named, or refuse in one line."""
    if not try_hold(directory, name):
        raise SearchError(
            f"search '{name}' is running in another process ({holder(directory, name)}); "
            "wait for it to end, stop it, or pick another search.name"
        )


def hold_new_name(directory: str | os.PathLike[str], base: str, taken) -> str:
    """`base`, or `base-2`, `base-3`, ...: the first name no live process holds and
    `taken(name)` (the store knows the search) says is free; its lock is held."""
    for n in itertools.count(1):
        name = base if n == 1 else f"{base}-{n}"
        if not try_hold(directory, name):
            continue
        if not taken(name):
            return name
        release(directory, name)
    raise AssertionError("unreachable")


def release(directory: str | os.PathLike[str], name: str) -> None:
    lock = _HELD.pop(lock_path(directory, name).resolve(), None)
    if lock is not None:
        lock.release()
