"""The CLI in a process of its own, without paying the interpreter start each time.

A test that drives `python -m pipeline.<command>` as a process (signals, kill -9, exit
codes, several searches at once, a server to kill) used to start a new interpreter, and
each one spends ~8-12 CPU-seconds importing TensorFlow, keras-tuner and MLflow before it
does anything. Here one preloaded process per pytest worker (the "zygote", as Android and
multiprocessing's forkserver call it) has imported them once, and forks a child per
command: a real process with its own pid, process group, working directory, environment,
stdin/stdout/stderr, signals and exit status, running the command's `__main__` as
`python -m` does. What the child does not repeat is the imports.

The fork happens before any TensorFlow op runs in the zygote (imports start no TF thread
pool), so the child starts TF as a fresh interpreter would. What a forked command cannot
show is what a fresh interpreter imports; the tests about that (`--help`, `--cfg job` and
the report never load TensorFlow) and one test per command keep a real interpreter
(`fresh=True`, or `ATTENTION_SEARCH_TEST_FORK=0` for all of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from pipeline.runtime.zygote import ForkedProcess, Zygote

PRELOAD = (
    "tensorflow",
    "keras",
    "keras_tuner",
    "mlflow",
    "mlflow.keras",
    "mlflow.tracking",
    "pipeline.runtime.cli",
    "pipeline.search.run",
    "pipeline.cluster.launcher",
    "pipeline.search.roles",
    "pipeline.report",
    "pipeline.reproduce",
    "pipeline.server",
    "mlflow.cli",  # `mlflow server` (start_server_forked)
)
ENABLED = os.environ.get("ATTENTION_SEARCH_TEST_FORK", "1") != "0"


_lock = threading.Lock()
_zygote: Zygote | None = None


def zygote() -> Zygote:
    """This pytest process's zygote, started on first use (again if it died)."""
    global _zygote
    with _lock:
        if _zygote is None or not _zygote.alive():
            _zygote = Zygote(PRELOAD, cwd=Path(__file__).resolve().parent.parent)
            _zygote.wait_ready()
        return _zygote


def python_module(args: list[str]) -> tuple[str, list[str]] | None:
    """`-m pipeline.x a b` -> ("pipeline.x", ["a", "b"]); None for anything else."""
    if len(args) >= 2 and args[0] == "-m" and args[1].startswith("pipeline."):
        return args[1], list(args[2:])
    return None


def popen_python(args: list[str], *, fresh: bool = False, **kwargs):
    """`subprocess.Popen([sys.executable, *args], **kwargs)`, forked from the zygote when
    `args` runs a pipeline command (and `fresh` is not asked for)."""
    target = python_module(args)
    if target is None or fresh or not ENABLED:
        return subprocess.Popen([sys.executable, *args], **kwargs)
    return ForkedProcess(zygote(), *target, **kwargs)


def run_python(args: list[str], *, fresh: bool = False, timeout: float | None = None,
               capture_output: bool = False, text: bool = False, **kwargs):  # fmt: skip
    """`subprocess.run([sys.executable, *args], ...)`, forked as `popen_python` is."""
    if python_module(args) is None or fresh or not ENABLED:
        return subprocess.run(
            [sys.executable, *args], timeout=timeout, capture_output=capture_output,
            text=text, **kwargs,
        )  # fmt: skip
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = popen_python(args, text=text, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_server_forked(command: list[str], env: dict[str, str], **popen_kwargs):
    """`pipeline.tracking.mlflow_server.start_server_process` with the `mlflow server`
    CLI forked from the zygote: the same command in its own session, dying with the test,
    minus the ~3 s of importing MLflow's CLI (uvicorn still starts as a new interpreter).
    The tests of `python -m pipeline.server` start the whole chain fresh."""
    from pipeline.tracking.mlflow_server import server_process_env

    if not ENABLED or command[1:3] != ["-m", "mlflow"]:
        from pipeline.tracking.mlflow_server import start_server_process

        return start_server_process(command, env, **popen_kwargs)
    return ForkedProcess(
        zygote(),
        "mlflow",
        command[3:],
        cwd=popen_kwargs.pop("cwd", os.getcwd()),
        env=server_process_env(env),
        start_new_session=True,
        die_with_parent=True,
        **popen_kwargs,
    )
