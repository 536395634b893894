"""The forked CLI (tests/forked_cli.py, on pipeline/runtime/zygote.py) behaves as a fresh
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

import pytest

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


def test_a_zygote_s_children_start_with_what_it_loaded_frozen():
    """So a child's collections never scan (or copy, page by page) the preloaded modules,
    and a search child's `frozen_heap` does not collect them all again."""
    from pipeline.runtime.zygote import Zygote

    zygote = Zygote(["json", "email.parser"], cwd=PROJECT_ROOT)
    try:
        child = ForkedProcess(
            zygote, "tests.plugins.heap_probe", [], cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        frozen = int(child.stdout.read())
        assert child.wait() == 0
    finally:
        zygote.close()
    assert frozen > 10_000  # the interpreter's own modules and the preload, at least


def gone(pid: int) -> bool:
    """Dead or a zombie (a container's pid 1 may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("fork", [False, True], ids=["new-interpreter", "forked"])
def test_a_zygote_and_its_children_die_with_the_process_that_started_it(fork):
    starter = subprocess.Popen(
        [sys.executable, "-c", (
            "import subprocess, time; from pipeline.runtime.zygote import ForkedProcess, Zygote\n"
            f"z = Zygote([], die_with_parent=True, fork={fork})\n"
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


def test_a_forked_zygote_runs_children_as_a_new_interpreter_would(tmp_path):
    """The cluster's zygote is forked from the search command, inside its `@hydra.main`,
    after numpy sized its BLAS pool and with the collector off (the command's start-up):
    a role forked from it starts its own Hydra run, in the cwd and environment it was
    given, with the pool the zygote's OMP_NUM_THREADS asks for and the collector on, and
    its output is its own (nothing of the starter's)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import gc, os, sys\n"
        "from hydra.core.global_hydra import GlobalHydra\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'})\n"
        "print(GlobalHydra.instance().is_initialized(), os.getcwd(), os.environ['ROLE'], blas,\n"
        "      gc.isenabled())\n"
    )
    starter = tmp_path / "starter.py"
    starter.write_text(
        "import gc, os, subprocess\n"
        "import hydra, numpy\n"
        "gc.disable()\n"
        "from pipeline.runtime.zygote import ForkedProcess, Zygote\n"
        "@hydra.main(version_base='1.3', config_path=None)\n"
        "def main(_cfg):\n"
        "    print('starter output', flush=True)\n"
        "    z = Zygote(['threadpoolctl'], cwd=os.getcwd(), fork=True, die_with_parent=True,\n"
        "               env={**os.environ, 'OMP_NUM_THREADS': '1'})\n"
        "    p = ForkedProcess(z, 'probe', [], cwd=os.environ['WORK'],\n"
        "                      env={**os.environ, 'ROLE': 'w1'}, stdout=subprocess.PIPE,\n"
        "                      text=True, start_new_session=True)\n"
        "    out, _ = p.communicate(timeout=60)\n"
        "    print('child said', out.strip(), 'exit', p.returncode, flush=True)\n"
        "    z.close()\n"
        "main()\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(starter), f"hydra.run.dir={tmp_path}/hydra"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{PROJECT_ROOT}", "OMP_NUM_THREADS": "2",
             "WORK": str(work)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines == ["starter output", f"child said False {work} w1 [1] True exit 0"], done.stdout


@pytest.mark.parametrize(
    ("ending", "code", "stderr"),
    [("return 3", 3, ""), ("raise SystemExit(2)", 2, ""), ("raise SystemExit('bad')", 1, "bad")],
)
def test_a_command_exiting_without_teardown_still_does_what_exit_does(ending, code, stderr):
    """`pipeline.runtime.cli.exit_without_teardown` skips only the modules' teardown: buffered
    output is flushed, a non-daemon thread finishes, atexit handlers run, and the exit
    code is the command's."""
    script = (
        "import atexit, sys, threading, time\n"
        "from pipeline.runtime.cli import exit_without_teardown\n"
        "def main():\n"
        "    sys.stdout.write('buffered')\n"  # no newline, no flush: only exit flushes it
        "    threading.Thread(target=lambda: (time.sleep(0.3), print(' thread'))).start()\n"
        "    atexit.register(print, ' atexit')\n"
        f"    {ending}\n"
        "exit_without_teardown(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert done.stdout == "buffered thread\n atexit\n"
    assert done.stderr.strip() == stderr
