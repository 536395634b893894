"""An MLflow tracking server over the project's store (`python -m pipeline.server`).

Searches on several processes or hosts log to it with `tracking=server` (or
`tracking.uri=http://HOST:PORT`). Backend: the composed `tracking.uri` (SQLite under
mlruns/ by default; a `postgresql://` URI for a team); artifacts are served from
`tracking.artifact_root` (`--serve-artifacts`), so clients need no shared filesystem.
Also the one place tests and tools start a throwaway server (`mlflow_server`).
"""

from __future__ import annotations

import os
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


@contextmanager
def mlflow_server(
    backend_uri: str, cwd: str | Path, artifacts: str | Path | None = None
) -> Iterator[str]:
    """`mlflow server` on a free 127.0.0.1 port; yields its base URL, stops it after."""
    port = free_port()
    server = subprocess.Popen(
        server_command(backend_uri, artifacts, "127.0.0.1", port),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **SERVER_ENV},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def serve(tracking, host: str, port: int, workers: int) -> int:
    """Run `mlflow server` on the configured store until it stops; its exit code."""
    from pipeline.tracking.redaction import redact
    from pipeline.tracking.store import TrackingError

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
    print(
        f"tracking server: http://{host}:{port}  store {redact(backend)}  "
        f"artifacts {artifacts}\nsearches: python -m pipeline.search tracking=server "
        f"tracking.uri=http://{host}:{port}",
        flush=True,
    )
    return subprocess.call(
        server_command(backend, artifacts, host, port, workers),
        env={**os.environ, **SERVER_ENV},
    )
