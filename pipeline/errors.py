"""Turn an exception into the one line a user should read."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil


class UserFacingError(Exception):
    """Base of the errors whose message is the whole story (bad input, unusable store,
    a search that cannot go on): commands print it as one line and exit 2."""


class SearchError(UserFacingError, RuntimeError):
    """The search as a whole could not go on; the message says why."""


class DiskFull(UserFacingError, RuntimeError):
    """A write failed for want of space: the machine's fault, not the trial's; the search
    stops (exit 75) and the same command, once there is room, runs that trial again."""


def disk_full(err: BaseException) -> OSError | str | None:
    """The ENOSPC/EDQUOT error in `err` or what caused it (h5py and MLflow wrap it)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        if any(mark in str(err) for mark in ("No space left on device", "Disk quota exceeded")):
            return str(err)
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def disk_full_line(err: BaseException, folders: tuple[str, ...] = ()) -> str:
    """One line naming the fullest place among the file that did not fit and the
    `folders` the command writes to (the error's file name alone can mislead: a copy
    names its source, and MLflow's staged writes name none)."""
    named = getattr(disk_full(err), "filename", None)
    place = fullest((*folders, *([os.path.dirname(named)] if named else [])))
    if place:
        return f"no space left on the device of {place}"
    return f"no space left on the device ({one_line(err)})"


def fullest(folders: tuple[str, ...]) -> str | None:
    """`folder (N KiB free)` for the one with the least room, None if none can be read."""
    free = {}
    for folder in folders:
        with contextlib.suppress(OSError):
            free[folder] = shutil.disk_usage(folder).free
    if not free:
        return None
    least = min(free, key=free.get)
    return f"{least} ({free[least] // 1024} KiB free)"


class UploadsKept(UserFacingError, RuntimeError):
    """Trials finished, but some of their artifacts wait in a spool: resumable (exit 75)."""


_NAMED = re.compile(r"^\s*(\w+(Error|Exception)): (.+)$")


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first informative line; TensorFlow's 'Graph execution error:' wraps the real one."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        named = [m.group(0).strip() for ln in lines[1:] if (m := _NAMED.match(ln))]
        text = named[-1] if named else f"{text} {lines[1]}"
    return text[:limit]
