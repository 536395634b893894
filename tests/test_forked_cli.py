"""The forked CLI (tests/forked_cli.py) behaves as a fresh `python -m` process does where
the tests look: exit code, stdout and stderr, a session of its own, death by a signal.
(Signals handled by the search itself are the lifecycle tests' business.)"""

from __future__ import annotations

import os
import signal
import subprocess

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
