"""`mlflow models serve` on a text model: raw text over HTTP (`POST /invocations`).

A context manager for tests and `bench serve`; the server runs in its own process group
(MLflow's CLI starts uvicorn under it), stopped as a whole, with the process helpers the
tracking server uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.tracking.mlflow_server import (
    free_port,
    start_server_process,
    stop_server_process,
    wait_for,
)


def serve_command(model_uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """What the README tells a user to run (`--env-manager local`: this environment)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "--host", host, "--port", str(port),
    ]  # fmt: skip


@contextmanager
def model_server(
    model_uri: str, tracking_uri: str, cwd: str | Path, log: Path | None = None
) -> Iterator[str]:
    """Serve `model_uri` on a free 127.0.0.1 port; yields the base URL once /ping answers."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    # MLflow execs `uvicorn` by name: this environment's scripts must come first on PATH
    scripts = os.path.dirname(sys.executable)
    path = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    server = start_server_process(
        serve_command(model_uri, port),
        {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": path},
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/ping", seconds=120)
        yield base
    finally:
        stop_server_process(server)
        if log:
            out.close()
