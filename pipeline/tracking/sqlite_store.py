"""A local SQLite store's first creation, serialised, and its interrupted migrations repaired.

MLflow creates and migrates a SQLite store the first time a process opens it. Two
processes doing that at once race in alembic and can leave the store half-migrated
(`table _alembic_tmp_tags already exists` for every later command). A file lock beside the
database (`filelock`) makes every opener of this project wait for the first one; a store
an older run left half-migrated is repaired when that is safe, or refused in one line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.errors import UserFacingError

LOCK_TIMEOUT_S = 300  # a first migration takes seconds; this only guards a hung holder
TMP_PREFIX = "_alembic_tmp_"


class StoreError(UserFacingError, RuntimeError):
    """The SQLite store cannot be used as it is; the message says how to repair it."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser().resolve()


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold `<db>.lock` while opening (creating, migrating) a SQLite store; no-op otherwise."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            repair_interrupted_migration(path)
            yield
    except Timeout:
        raise StoreError(
            f"tracking.uri: another process has held {lock.lock_file} for {LOCK_TIMEOUT_S}s "
            "while opening the store; if none is running, delete the lock file"
        ) from None


def repair_interrupted_migration(path: Path) -> list[str]:
    """Drop the temporary tables an interrupted alembic batch migration left behind, when
    the table they were rebuilding is still there (MLflow then migrates again). Refuse,
    with the repair spelled out, when it is not. Returns the dropped tables."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        with sqlite3.connect(path, timeout=30) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            leftovers = sorted(t for t in tables if t.startswith(TMP_PREFIX))
            for tmp in leftovers:
                original = tmp.removeprefix(TMP_PREFIX)
                if original not in tables:
                    raise StoreError(
                        f"tracking.uri: {path} is half-migrated: table '{original}' is missing "
                        f"and '{tmp}' holds its rows; restore a backup, or run sqlite3 "
                        f'{path} "ALTER TABLE {tmp} RENAME TO {original}" and start again'
                    )
            for tmp in leftovers:
                db.execute(f'DROP TABLE "{tmp}"')
    except sqlite3.DatabaseError as err:
        raise StoreError(f"tracking.uri: {path} is not a usable SQLite database ({err})") from None
    return leftovers
