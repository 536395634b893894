"""Processes forked from one preloaded interpreter (a "zygote", as Android and
multiprocessing's forkserver call it): `python -m <module> args` without paying the
interpreter's start each time.

Each cluster role (the chief, every worker, every restart) is a `python -m pipeline.search`
of its own, and a fresh interpreter spends ~8-12 CPU-seconds importing TensorFlow,
keras-tuner and MLflow before it does anything: on 2 cores, three roles starting at once
took ~15 s of wall time. One zygote imports them once and forks a child per role: a real
process with its own pid, session, working directory, environment, stdin/stdout/stderr,
signals and exit status, running the module's `__main__` as `python -m` does.

The fork happens before any TensorFlow op runs in the zygote (imports start no TF thread
pool: only OpenBLAS and jemalloc threads, which are fork-safe), so a child starts TF as a
fresh interpreter would: `pipeline.reproduce` retrains a forked worker's best trial to
its logged metrics (tests/test_team.py). The
zygote dies with the process that started it (`die_with_parent`), and its children with
it, so a SIGKILLed launcher leaves no orphan. The test suite forks its CLI runs from one
(tests/forked_cli.py).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.runtime.processes import own_group_dying_with_parent
from pipeline.runtime.zygote_server import HEADER, serve

# ---------------------------------------------------------------- the client


class _ForkedZygote:
    """The part of `subprocess.Popen` a `Zygote` uses, for one forked from this process."""

    def __init__(self, pid: int, stdout) -> None:
        self.pid, self.stdout = pid, stdout
        self.returncode: int | None = None

    def _reap(self, flags: int) -> None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                self.returncode = -signal.SIGKILL
                return
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        self._reap(os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        self._reap(0)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _fork_zygote(
    path: str, preload: Sequence[str], cwd, env: dict[str, str] | None, die: bool
) -> _ForkedZygote:
    """A zygote forked from this process: what it imported is imported there. Call it
    before this process starts threads or opens connections (the child keeps a copy of
    everything, and only this thread)."""
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the zygote
        code = 1
        try:
            os.close(read_fd)
            if die:
                own_group_dying_with_parent()
            devnull = os.open(os.devnull, os.O_RDWR)
            for target, fd in ((0, devnull), (1, write_fd), (2, devnull)):
                os.dup2(fd, target)
            os.close(devnull)
            os.close(write_fd)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # its fds, as children see
            if cwd is not None:
                os.chdir(cwd)
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            _as_a_new_interpreter()
            serve(path, preload)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return _ForkedZygote(pid, os.fdopen(read_fd, "r"))


def _as_a_new_interpreter() -> None:
    """In a forked zygote, undo what its starter set up that a fresh interpreter would not
    have: Hydra's global instance (each child runs its own `@hydra.main`), BLAS pools
    sized before the zygote's environment (OMP_NUM_THREADS) was set, and the cyclic
    collector a search command keeps off through its start-up (`collect_after_startup`)."""
    gc.enable()
    if "hydra" in sys.modules:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn's dependency; without it the pools stay as they are
            return
        threadpool_limits(int(threads))


class Zygote:
    """A preloaded interpreter that forks `python -m` children on request. It starts at
    construction and is waited for on the first `fork` (its imports overlap the caller's
    work); `die_with_parent`: it gets SIGTERM when this process dies, even by SIGKILL.
    `fork`: forked from this process instead of a new interpreter, so what this process
    imported already costs nothing (see `_fork_zygote` for when that is safe)."""

    def __init__(
        self,
        preload: Sequence[str],
        *,
        cwd=None,
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
        fork: bool = False,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="zygote-"))
        self.path = str(self.folder / "socket")
        self.proc: subprocess.Popen | _ForkedZygote
        if fork:
            self.proc = _fork_zygote(self.path, preload, cwd, env, die_with_parent)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.runtime.zygote", self.path, *preload],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                preexec_fn=own_group_dying_with_parent if die_with_parent else None,
            )
        self._ready = False
        atexit.register(self.close)

    def wait_ready(self) -> None:
        """Until it has imported its modules; RuntimeError if it died instead."""
        if not self._ready:
            line = self.proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"the zygote did not start (exit {self.proc.wait()})")
            self._ready = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)  # its socket

    def fork(
        self,
        module: str,
        args: list[str],
        cwd,
        env: dict,
        fds: list[int],
        setsid: bool,
        die_with_parent: bool = False,
    ):
        self.wait_ready()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        request = {"module": module, "args": args, "cwd": str(cwd), "env": env}
        request.update(setsid=setsid, die_with_parent=die_with_parent)
        body = json.dumps(request).encode()
        socket.send_fds(conn, [HEADER.pack(len(body)) + body], fds)
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)  # byte by byte: the exit status follows on this socket
            if not chunk:
                raise RuntimeError("the zygote refused the command")
            line += chunk
        return conn, int(line)


class ForkedProcess:
    """The part of `subprocess.Popen` the launcher and the tests use, for a child of a
    zygote."""

    def __init__(self, zygote: Zygote, module: str, args: list[str], *, cwd, env=None,
                 stdout=None, stderr=None, text=False, start_new_session=False,
                 die_with_parent=False):  # fmt: skip
        self.args = [sys.executable, "-m", module, *args]
        self.returncode: int | None = None
        own: list[int] = []  # fds made here: the zygote gets copies, these are closed
        stdin_fd, _ = self._stream(subprocess.DEVNULL, 0, text, own)
        out_fd, self.stdout = self._stream(stdout, 1, text, own)
        if stderr == subprocess.STDOUT:
            err_fd, self.stderr = out_fd, None
        else:
            err_fd, self.stderr = self._stream(stderr, 2, text, own)
        full_env = dict(os.environ if env is None else env)
        try:
            self._conn, self.pid = zygote.fork(
                module,
                args,
                cwd,
                full_env,
                [stdin_fd, out_fd, err_fd],
                start_new_session,
                die_with_parent,
            )
        finally:
            for fd in own:
                os.close(fd)

    @staticmethod
    def _stream(spec, default: int, text: bool, own: list[int]):
        """The fd the child gets for `spec` (as Popen takes it), and our end of a pipe."""
        if spec is None:
            return default, None
        if spec == subprocess.DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR)
            own.append(fd)
            return fd, None
        if spec == subprocess.PIPE:
            read_end, write_end = os.pipe()
            own.append(write_end)
            return write_end, open(read_end, "r" if text else "rb")  # noqa: SIM115
        return (spec if isinstance(spec, int) else spec.fileno()), None

    def _status(self, timeout: float | None) -> bool:
        """Read the exit status if the zygote sent it within `timeout` seconds."""
        if self.returncode is not None:
            return True
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return False
        line = b""
        while not line.endswith(b"\n"):
            chunk = self._conn.recv(64)
            if not chunk:
                raise RuntimeError("the zygote went away before reporting an exit status")
            line += chunk
        self.returncode = os.waitstatus_to_exitcode(int(line))
        self._conn.close()
        return True

    def poll(self) -> int | None:
        self._status(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._status(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        streams = [s for s in (self.stdout, self.stderr) if s is not None]
        read: dict = {}
        readers = [
            threading.Thread(target=lambda s=s: read.__setitem__(id(s), s.read()), daemon=True)
            for s in streams
        ]  # both at once, as Popen does: a child filling one pipe must not block the other
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(left())
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        for stream in streams:
            stream.close()
        self.wait(left())
        return tuple(None if s is None else read[id(s)] for s in (self.stdout, self.stderr))

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
