"""The zygote's own side (`pipeline.runtime.zygote` is its client): preload modules, then
fork one child per request, each running a module's `__main__` as `python -m` does, and
report its pid and wait status on the request's connection."""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import NoReturn

from pipeline.runtime.processes import die_with_parent

HEADER = struct.Struct("!I")


def run_exit_handlers() -> None:
    """What the interpreter does at exit that a process needs: join the non-daemon threads,
    run the atexit handlers (logging, multiprocessing, MLflow's flushes), flush stdout and
    stderr. What it does after (tearing down every module: ~2 s with TensorFlow and MLflow
    loaded) is left to `os._exit`."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed pipe: nothing left to say
                pass


def _run_child(module: str, args: list[str]) -> int:
    """What `python -m module args` does from here on, with its exit code: SystemExit's
    code, 1 with a traceback for an uncaught exception, death by SIGINT for an uncaught
    Ctrl-C; then non-daemon threads are joined and atexit handlers run, as at exit."""
    sys.argv = [module, *args]
    for name in (module, f"{module}.__main__"):  # `-m` runs it as __main__ only, as here
        sys.modules.pop(name, None)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as err:
        if err.code is None:
            code = 0
        elif isinstance(err.code, int):
            code = err.code
        else:
            print(err.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter does: print it, exit 1
        traceback.print_exc()
        code = 1
    run_exit_handlers()
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code & 0xFF


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, HEADER.size + 65536, 3)
    (size,) = HEADER.unpack(head[: HEADER.size])
    body = head[HEADER.size :]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("client went away mid-request")
        body += chunk
    return json.loads(body), fds


def _child(request: dict, fds: list[int], wake: tuple[int, int], zygote_pid: int) -> NoReturn:
    """In a forked child: its own signals, session, stdio, folder and environment, then
    the module's `__main__` (never returns)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in wake:
        os.close(fd)
    if request["setsid"]:
        os.setsid()
    if request.get("die_with_parent"):
        die_with_parent()
        if os.getppid() != zygote_pid:  # it died before that took effect
            os.kill(os.getpid(), signal.SIGTERM)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("PYTHONUNBUFFERED"):  # as `python -u` would write
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=True, write_through=True)
    os._exit(_run_child(request["module"], request["args"]))


def _report_exits(waiting: dict[int, socket.socket]) -> None:
    """Each child that ended: its wait status to its client, whose connection closes."""
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"{status}\n".encode())
            except OSError:
                pass
            conn.close()


def serve(path: str, preload: Sequence[str]) -> None:
    """Preload, then fork one child per request; report each child's pid, then its wait
    status, on the request's connection. Returns when the process that started it is
    gone."""
    import importlib

    parent, zygote_pid = os.getppid(), os.getpid()
    for name in preload:
        importlib.import_module(name)
    # What is alive now lives as long as any child: frozen once here, as gc.freeze's
    # documentation advises for a process that forks without exec. No child's collection
    # scans it or writes its objects' headers (copy-on-write), and a search child finds its
    # heap frozen already (`frozen_heap`) instead of collecting it all again.
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    waiting: dict[int, socket.socket] = {}  # child pid -> its client's connection
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    os.write(1, b"ready\n")  # to the starter's pipe, whatever sys.stdout is in a fork
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _recv_request(conn)
                except (OSError, EOFError, ValueError):
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    for own in (listener, conn, *waiting.values()):
                        own.close()
                    _child(request, fds, (wake_r, wake_w), zygote_pid)
                for fd in set(fds):
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                waiting[pid] = conn
            else:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
        _report_exits(waiting)
        if os.getppid() != parent:  # whoever started it is gone
            return
