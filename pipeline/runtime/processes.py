"""Processes: ports, a child's process group tied to its parent's life, stopping a group.

Shared by the tracking server launcher, the model server and the cluster's processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

# The CPU a cluster worker runs on: set by the launcher, read first thing by the worker's
# process (`pipeline.runtime.cli.pin_to_cpu_from_env`).
CPU_ENV = "PIPELINE_WORKER_CPU"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _libc_prctl():
    """prctl(2), resolved once here: the child between fork and exec must not import."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the process group still helps
        return None


_PRCTL = _libc_prctl()


def own_group_dying_with_parent() -> None:
    """In a child process, before exec: a session and process group of its own (so it can be
    stopped as a whole: the MLflow CLI, uvicorn and its workers; a cluster's chief), and
    SIGTERM when the process that started it dies, even by SIGKILL."""
    os.setsid()
    die_with_parent()


def die_with_parent() -> None:
    """SIGTERM to this process when the one that started it dies, even by SIGKILL (Linux;
    a no-op elsewhere)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process's whole group, SIGKILL after a grace period: its ports are
    free when this returns (killing only the MLflow CLI leaves uvicorn's workers serving)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            break
        time.sleep(0.2)
    try:  # stragglers of the group (uvicorn workers) outliving the CLI
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
