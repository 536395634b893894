"""An MLflow tracking server over the project's store (`python -m pipeline.server`).

Searches on several processes or hosts log to it with `tracking=server` (or
`tracking.uri=http://HOST:PORT`). Backend: the composed `tracking.uri` (SQLite under
mlruns/ by default; a `postgresql://` URI for a team); artifacts are served from
`tracking.artifact_root` (`--serve-artifacts`), so clients need no shared filesystem.
Also the one place tests and tools start a throwaway server (`mlflow_server`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def server_command(
    backend_uri: str, artifacts: str | Path | None, host: str, port: int, workers: int = 1
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri,
        "--workers",
        str(workers),
    ]
    if artifacts is not None:
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    return command


SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE_SECONDS = 15


def _own_group_dying_with_parent() -> None:
    """In the server's child process, before exec: a process group of its own (so it can be
    stopped as a whole: the MLflow CLI, uvicorn and its workers), and SIGTERM when the
    process that started it dies, even by SIGKILL (the MLflow CLI forwards it to uvicorn)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the process group still helps
        pass


def start_server_process(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """`mlflow server` in its own process group, tied to this process's life."""
    return subprocess.Popen(
        command,
        env={**os.environ, **SERVER_ENV},
        preexec_fn=_own_group_dying_with_parent,
        **popen_kwargs,
    )


def stop_server_process(proc: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the server's whole group, SIGKILL after a grace period: the port is free
    when this returns (killing only the MLflow CLI leaves uvicorn's workers serving)."""
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


@contextmanager
def mlflow_server(
    backend_uri: str, cwd: str | Path, artifacts: str | Path | None = None, port: int | None = None
) -> Iterator[str]:
    """`mlflow server` on a free (or the given) 127.0.0.1 port; yields its base URL, stops
    its whole process group after."""
    port = port or free_port()
    server = start_server_process(
        server_command(backend_uri, artifacts, "127.0.0.1", port),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health")
        yield base
    finally:
        stop_server_process(server)


def serve(tracking, host: str, port: int, workers: int) -> int:
    """Run `mlflow server` on the configured store until it stops; its exit code."""
    from pipeline.tracking.redaction import redact
    from pipeline.tracking.store import TrackingError, initialise_store

    backend = tracking.uri
    if backend.startswith(("http://", "https://")):
        raise TrackingError(
            f"tracking.uri: the server needs a database URI as its store, not {backend}"
        )
    if backend.startswith("sqlite:///"):
        Path(backend.removeprefix("sqlite:///")).expanduser().parent.mkdir(
            parents=True, exist_ok=True
        )
    artifacts = Path(tracking.artifact_root).expanduser().resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    initialise_store(backend)
    print(
        f"tracking server: http://{host}:{port}  store {redact(backend)}  "
        f"artifacts {artifacts}\nsearches: python -m pipeline.search tracking=server "
        f"tracking.uri=http://{host}:{port}",
        flush=True,
    )
    server = start_server_process(server_command(backend, artifacts, host, port, workers))
    try:
        return server.wait()
    finally:  # Ctrl-C, SIGTERM (raised as an exception by the CLI) or an error here
        stop_server_process(server)
