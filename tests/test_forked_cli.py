"""The forked CLI (tests/forked_cli.py, on pipeline/cluster/zygote.py) behaves as a fresh
`python -m` process does where the tests look: exit code, stdout and stderr, a session of
its own, death by a signal; a zygote started `die_with_parent` (the cluster launcher's)
takes its children with it when its starter dies. (Signals handled by the search itself
are the lifecycle tests' business.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT, store_overrides
from tests.forked_cli import ForkedProcess, popen_python, run_python


def test_a_forked_command_answers_as_a_fresh_interpreter_does():
    args = ["-m", "pipeline.search", "model.units=0"]
    fresh = run_python(args, fresh=True, cwd=PROJECT_ROOT, capture_output=True, text=True)
    forked = run_python(args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )
    assert forked.returncode == 2 and forked.stderr.startswith("error: model.units")


def test_a_forked_command_has_its_own_session_and_dies_of_a_signal(tmp_path):
    proc = popen_python(
        ["-m", "pipeline.search", "+experiment=quick", *store_overrides(tmp_path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert isinstance(proc, ForkedProcess)
    assert proc.stdout.readline().startswith("data: synthetic")  # it runs, and says so
    assert os.getsid(proc.pid) == proc.pid and proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def gone(pid: int) -> bool:
    """Dead or a zombie (a container's pid 1 may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_a_zygote_and_its_children_die_with_the_process_that_started_it():
    starter = subprocess.Popen(
        [sys.executable, "-c", (
            "import subprocess, time; from pipeline.cluster.zygote import ForkedProcess, Zygote\n"
            "z = Zygote([], die_with_parent=True)\n"
            "p = ForkedProcess(z, 'http.server', ['0', '--bind', '127.0.0.1'], cwd='.', "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, "
            "die_with_parent=True)\n"
            "print(z.proc.pid, p.pid, flush=True); time.sleep(600)"
        )],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    zygote, child = map(int, starter.stdout.readline().split())
    deadline = time.monotonic() + 30
    while os.getsid(child) != child and time.monotonic() < deadline:
        time.sleep(0.05)  # the zygote reports the pid before the child calls setsid
    assert not gone(zygote) and not gone(child)
    assert os.getsid(child) == child != os.getsid(zygote)
    starter.kill()  # as a launcher SIGKILLed
    starter.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not (gone(zygote) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(zygote) and gone(child)
