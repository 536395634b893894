"""An MLflow tracking server over the project's store (`python -m pipeline.server`).

Searches on several processes or hosts log to it with `tracking=server` (or
`tracking.uri=http://HOST:PORT`). Backend: the composed `tracking.uri` (SQLite under
mlruns/ by default; a `postgresql://` URI for a team); artifacts are served from
`tracking.artifact_root` (`--serve-artifacts`), so clients need no shared filesystem.
Also the one place tests and tools start a throwaway server (`mlflow_server`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.runtime.processes import (
    free_port,
    loopback,
    own_group_dying_with_parent,
    stop_group,
    wait_for,
)
from pipeline.tracking.sqlite_store import sqlite_path


def server_command(
    artifacts: str | Path | None, host: str, port: int, workers: int = 1, auth: bool = False
) -> list[str]:
    """The `mlflow server` command line. The backend store goes through the environment
    (`server_env`), so a password in its URI never shows in `ps`."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if artifacts is not None:
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    if auth:
        command += ["--app-name", "basic-auth"]
    return command


def server_env(backend_uri: str, **extra: str) -> dict[str, str]:
    """What `start_server_process` adds to the environment for a store (and auth)."""
    return {"MLFLOW_BACKEND_STORE_URI": backend_uri, **extra}


SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
STOP_GRACE_SECONDS = 15


def stop_server_process(proc: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """An `mlflow server` or `mlflow models serve` and its uvicorn workers stopped."""
    stop_group(proc, grace)


def server_process_env(env: dict[str, str]) -> dict[str, str]:
    """The whole environment of a server process: `env` (see `server_env`) on top of this
    process's environment and the settings every server here runs with."""
    return {**os.environ, **SERVER_ENV, **env}


def start_server_process(
    command: list[str], env: dict[str, str], **popen_kwargs
) -> subprocess.Popen:
    """`mlflow server` in its own process group, tied to this process's life; `env`
    (see `server_env`) on top of this process's environment."""
    return subprocess.Popen(
        command,
        env=server_process_env(env),
        preexec_fn=own_group_dying_with_parent,
        **popen_kwargs,
    )


@contextmanager
def mlflow_server(
    backend_uri: str,
    cwd: str | Path,
    artifacts: str | Path | None = None,
    port: int | None = None,
    start: Callable[..., subprocess.Popen] = start_server_process,
) -> Iterator[str]:
    """`mlflow server` on a free (or the given) 127.0.0.1 port; yields its base URL, stops
    its whole process group after. `start` starts the process as `start_server_process`
    does (the tests fork it from an interpreter that imported MLflow already)."""
    port = port or free_port()
    server = start(
        server_command(artifacts, "127.0.0.1", port),
        server_env(backend_uri),
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


MIN_ADMIN_PASSWORD = 12  # MLflow's basic-auth password policy
AUTH_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


def auth_config(tracking, folder: Path) -> dict[str, str]:
    """MLflow's basic-auth app configured from `tracking.auth_*`: an ini file in `folder`
    and the environment that points the server at it. The admin's password comes only from
    the environment (MLFLOW_AUTH_ADMIN_PASSWORD) and is needed once, to create the admin."""
    from pipeline.tracking.store import TrackingError

    permission = str(tracking.auth_default_permission).upper()
    if permission not in AUTH_PERMISSIONS:
        raise TrackingError(
            f"tracking.auth_default_permission: '{permission}' is not one of "
            + ", ".join(AUTH_PERMISSIONS)
        )
    db = str(tracking.auth_db)
    if (path := sqlite_path(db)) is not None:
        password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
        if not path.exists() and len(password) < MIN_ADMIN_PASSWORD:
            raise TrackingError(
                f"--auth: {path} has no users yet; set MLFLOW_AUTH_ADMIN_PASSWORD (at least "
                f"{MIN_ADMIN_PASSWORD} characters, MLflow's policy) and optionally "
                "MLFLOW_AUTH_ADMIN_USERNAME (default admin) for the first start"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        db = f"sqlite:///{path}"
    ini = folder / "basic_auth.ini"
    ini.touch(mode=0o600)
    ini.write_text(
        "[mlflow]\n"
        f"default_permission = {permission}\n"
        f"database_uri = {db}\n"
        f"admin_username = {os.environ.get('MLFLOW_AUTH_ADMIN_USERNAME', 'admin')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # The password check costs ~0.33 s of scrypt a request here: once per TTL instead.
        f"auth_cache_ttl_seconds = {int(tracking.auth_cache_s)}\n"
    )
    # CSRF protection of the auth app's forms: one key per start unless the team set one
    # (servers behind one load balancer must share it).
    secret = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


SERVER_FOLDER = "attention-search-server-"  # a server's own files (the auth ini) while it runs


def remove_left_folders(tmp: str) -> None:
    """The folders of servers killed with -9 (their auth ini names the user store)."""
    import shutil

    for folder in Path(tmp).glob(f"{SERVER_FOLDER}*"):
        try:
            pid = int((folder / "pid").read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or one starting right now
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def serve(tracking, host: str, port: int, workers: int, auth: bool = False) -> int:
    """Run `mlflow server` on the configured store until it stops; its exit code."""
    import tempfile

    from pipeline.runtime.redaction import redact
    from pipeline.tracking.store import (
        TrackingError,
        check_artifact_uri,
        has_scheme,
        initialise_store,
    )

    if not auth and not loopback(host):
        print(
            f"warning: --host {host} without --auth: anyone who reaches this port can read "
            "and change every run (add --auth, or keep 127.0.0.1)",
            flush=True,
        )
    backend = tracking.uri
    if backend.startswith(("http://", "https://")):
        raise TrackingError(
            f"tracking.uri: the server needs a database URI as its store, not {backend}"
        )
    if (db_file := sqlite_path(backend)) is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    if has_scheme(tracking.artifact_root):  # s3://...: the server's own to reach
        check_artifact_uri(tracking.artifact_root)
        artifacts = tracking.artifact_root
    else:
        artifacts = Path(tracking.artifact_root).expanduser().resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
    remove_left_folders(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=SERVER_FOLDER) as folder:
        (Path(folder) / "pid").write_text(str(os.getpid()))
        extra = auth_config(tracking, Path(folder)) if auth else {}
        initialise_store(backend)
        sign_in = "MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=... " if auth else ""
        print(
            f"tracking server: http://{host}:{port}  store {redact(backend)}  "
            f"artifacts {artifacts}" + ("  basic auth on" if auth else "") + "\n"
            f"searches: {sign_in}python -m pipeline.search tracking=server "
            f"tracking.uri=http://{host}:{port}",
            flush=True,
        )
        server = start_server_process(
            server_command(artifacts, host, port, workers, auth=auth),
            server_env(backend, **extra),
        )
        try:
            return server.wait()
        finally:  # Ctrl-C, SIGTERM (raised as an exception by the CLI) or an error here
            stop_server_process(server)
