"""Distributed search on loopback: a keras-tuner chief, two workers and a real `mlflow server`.

One server for the module (starting one costs ~9 CPU-seconds); each test logs to an
experiment of its own, so it sees only its runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.tracking.mlflow_server import mlflow_server
from tests.conftest import PROJECT_ROOT, start_search_cli
from tests.forked_cli import start_server_forked

pytestmark = pytest.mark.e2e

TINY_CLUSTER = [
    "+experiment=quick",
    "cluster=workers",
    "cluster.n_workers=2",
    "tracking.log_model=false",
    "attention.enabled=false",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, store_template):
    folder = tmp_path_factory.mktemp("cluster-server")
    shutil.copy(store_template, folder / "server.db")
    db = f"sqlite:///{folder}/server.db"
    with mlflow_server(db, folder, folder / "art", start=start_server_forked) as base:
        yield base


def cluster_overrides(tmp_path, base: str, name: str) -> list[str]:
    return [
        f"tracking.uri={base}",
        f"tracking.experiment={name}",
        f"tuner.directory={tmp_path}/tuner",
        f"hydra.run.dir={tmp_path}/hydra",
        f"search.name={name}",
    ]


def start_search(*overrides: str, env: dict | None = None) -> subprocess.Popen:
    """A cluster search whose merged output the test reads line by line."""
    return start_search_cli(*TINY_CLUSTER, *overrides, env=env)


def runs_of(base: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=base)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=500)


def test_a_killed_worker_is_restarted_and_the_search_completes(tmp_path, server):
    """Every worker stops after its first epoch at a barrier (tests/plugins/epoch_barrier.py)
    until worker-1 is SIGKILLed mid-trial; then the barrier opens for all."""
    barrier = tmp_path / "barrier"
    env = {**os.environ, "EPOCH_BARRIER": str(barrier), "EPOCH_BARRIER_AFTER": "1"}
    base = server
    proc = start_search(
        "tuner.max_trials=3",
        "train.epochs=2",
        "train.early_stopping.enabled=false",
        "plugins=[tests.plugins.epoch_barrier]",
        *cluster_overrides(tmp_path, base, "dist-kill"),
        env=env,
    )
    lines: list[str] = []
    pid, killed = None, False
    deadline = time.monotonic() + 600
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        found = re.search(r"started worker-1 \(pid (\d+)\)", line)
        if found and pid is None:
            pid = int(found.group(1))
        if not killed and pid and line.startswith("[worker-1]     epoch 1/2"):
            os.kill(pid, signal.SIGKILL)  # mid-trial: its child run is RUNNING
            killed = True
            barrier.touch()
        assert time.monotonic() < deadline, "search did not finish"
    proc.wait(timeout=60)
    output = "".join(lines)
    assert killed, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    assert "worker-1 exited with code -9" in output and "restarting it" in output
    runs = runs_of(base, "dist-kill")
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    interrupted = [c for c in children if c.data.tags.get("interrupted") == "true"]
    trial_ids = [c.data.tags["trial_id"] for c in finished]
    assert len(trial_ids) == len(set(trial_ids)) == 3  # each trial finished exactly once
    assert len(interrupted) == 1 and interrupted[0].info.status == "FAILED"
    assert interrupted[0].data.tags["worker"] == "worker-1"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_server_refuses_a_server_uri_as_its_store(run_cli):
    result = run_cli("server", "tracking.uri=http://127.0.0.1:5000")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: tracking.uri: the server needs a database")


def test_ctrl_c_stops_every_process_and_leaves_nothing_running(tmp_path, server):
    base = server
    proc = start_search(
        "tuner.max_trials=6",
        "train.epochs=5",
        "train.early_stopping.enabled=false",
        *cluster_overrides(tmp_path, base, "dist-int"),
    )
    lines, pids = [], []
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        found = re.search(r"cluster: started \S+ \(pid (\d+)\)", line)
        if found:
            pids.append(int(found.group(1)))
        if "epoch 1/5" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]
    assert "resume with: python -m pipeline.search" in output and "dist-int" in output
    runs = runs_of(base, "dist-int")
    assert len(pids) == 3  # chief and two workers
    for pid in pids:  # no orphans
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    parent = next(r for r in runs if r.data.tags.get("kind") == "search")
    assert parent.info.status == "KILLED"


def test_a_cluster_search_killed_with_all_its_processes_resumes_by_name(tmp_path, run_cli, server):
    """The machine dies: launcher, chief and workers SIGKILLed mid-search. Re-running the
    search by name continues it: same parent, finished trials not re-run, the interrupted
    ones run once more (their old runs FAILED + interrupted)."""
    base = server
    overrides = [
        "tuner.max_trials=4",
        "train.epochs=5",
        "train.early_stopping.enabled=false",
        *cluster_overrides(tmp_path, base, "dist-resume"),
    ]
    proc = start_search(*overrides)
    lines, pids, finished_one = [], [], False
    deadline = time.monotonic() + 600
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        found = re.search(r"cluster: started \S+ \(pid (\d+)\)", line)
        if found:
            pids.append(int(found.group(1)))
        finished_one = finished_one or "-> val_accuracy" in line
        if finished_one and re.search(r"\[worker-\d\]\s+epoch [2-4]/5", line):
            for pid in [*pids[::-1], proc.pid]:  # workers, chief, then the launcher
                os.kill(pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "no trial finished"
    proc.wait(timeout=30)
    output = "".join(lines)
    assert finished_one, output[-3000:]
    before = runs_of(base, "dist-resume")
    done_before = {
        r.data.tags["trial_id"]
        for r in before
        if r.data.tags.get("kind") == "trial" and r.info.status == "FINISHED"
    }
    left_running = {
        r.data.tags["trial_id"]
        for r in before
        if r.data.tags.get("kind") == "trial" and r.info.status == "RUNNING"
    }
    assert done_before and left_running, output[-3000:]

    result = run_cli("search", *TINY_CLUSTER, *overrides, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "search 'dist-resume' (resumed)" in result.stdout
    assert f"{len(left_running)} interrupted trial run(s) marked FAILED" in result.stdout
    runs = runs_of(base, "dist-resume")
    parents = [r for r in runs if r.data.tags.get("kind") == "search"]
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    finished = [c.data.tags["trial_id"] for c in children if c.info.status == "FINISHED"]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 4
    runs_per_trial = {t: 0 for t in finished}
    for c in children:
        runs_per_trial[c.data.tags["trial_id"]] += 1
    assert all(runs_per_trial[t] == 1 for t in done_before)  # not re-run
    assert all(runs_per_trial[t] == 2 for t in left_running)  # re-run exactly once
    interrupted = [c for c in children if c.data.tags.get("interrupted") == "true"]
    assert {c.data.tags["trial_id"] for c in interrupted} == left_running
    assert all(c.info.status == "FAILED" for c in interrupted)
    assert parents[0].data.metrics["trials_finished"] == 4
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_cluster_race_gives_its_rounds_to_racers_and_restarts_a_killed_one(tmp_path, server):
    """search.seeds=adaptive on a cluster: the chief and workers train each configuration's
    first seeds, then the launcher's racer processes take the race's assignments from its
    queue. The first racer to take one is SIGKILLed: its run is closed FAILED, it is
    started again, and every (configuration, seed) ends with exactly one FINISHED run."""
    import json

    from mlflow.tracking import MlflowClient

    from tests.test_racing import RACED

    proc = start_search(
        *[o for o in RACED if not o.startswith(("search.name=", "+experiment="))],
        *cluster_overrides(tmp_path, server, "dist-race"),
    )
    lines: list[str] = []
    pids: dict[str, int] = {}
    killed = None
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        if found := re.search(r"started (racer-\d+) \(pid (\d+)\)", line):
            pids[found.group(1)] = int(found.group(2))
        taking = re.match(r"\[(racer-\d+)\] race: trial", line)
        if killed is None and taking:  # the first racer to take an assignment
            killed = taking.group(1)
            os.kill(pids[killed], signal.SIGKILL)
    proc.wait(timeout=60)
    output = "".join(lines)
    assert proc.returncode == 0 and killed, output[-3000:]
    assert "race: 2 configurations, up to 3 seeds each" in output
    assert f"{killed} exited with code -9" in output and "race: stopped" in output
    runs = runs_of(server, "dist-race")
    parent = next(r for r in runs if r.data.tags.get("kind") != "trial")
    client = MlflowClient(tracking_uri=server)
    race_file = client.download_artifacts(parent.info.run_id, "search/race.json", str(tmp_path))
    race = json.loads(Path(race_file).read_text())
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    finished: dict[str, list[int]] = {}
    for run in children:
        if run.info.status == "FINISHED":
            finished.setdefault(run.data.tags["trial_id"], []).append(int(run.data.tags["seed"]))
    assert {k: sorted(v) for k, v in finished.items()} == {
        k: list(range(n)) for k, n in race["seeds"].items()
    }  # every seed once
    raced = [r for r in children if int(r.data.tags["seed"]) >= 2]
    assert raced and all(r.data.tags["worker"].startswith("racer-") for r in raced)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_worker_started_by_hand_as_the_launcher_says_trains_the_trials(tmp_path, server):
    """docs/team.md, "Workers on other hosts": with `cluster.n_workers=0` the launcher starts
    no worker and prints how to start one. Started as printed, in an environment that has
    none of the launcher's variables, the worker trains every trial of the search."""
    import shlex

    from tests.forked_cli import popen_python

    proc = start_search(
        "cluster.n_workers=0", "tuner.max_trials=2", *cluster_overrides(tmp_path, server, "by-hand")
    )
    lines: list[str] = []
    worker, log = None, (tmp_path / "worker.log").open("w")
    try:
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if line.startswith("cluster: no local workers"):
                break
        found = re.search(
            r"with (KERASTUNER_ORACLE_IP=\S+) (KERASTUNER_ORACLE_PORT=\S+) "
            r"KERASTUNER_TUNER_ID=worker-N python (.+?) \(N: ",
            lines[-1],
        )
        assert found, "".join(lines)[-3000:]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ATTENTION_SEARCH", "KERASTUNER"))}  # fmt: skip
        env.update(dict(kv.split("=", 1) for kv in found.group(1, 2)))
        env["KERASTUNER_TUNER_ID"] = "worker-7"
        command = shlex.split(found.group(3).replace("worker-N", "worker-7"))
        worker = popen_python(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        assert worker.wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        lines.append(proc.communicate(timeout=120)[0])
    finally:
        for p in (proc, worker):
            if p is not None and p.poll() is None:
                p.kill()
        log.close()
    assert proc.returncode == 0, "".join(lines)[-3000:]
    runs = runs_of(server, "by-hand")
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(children) == 2 and {c.data.tags["worker"] for c in children} == {"worker-7"}
    assert all(c.info.status == "FINISHED" for c in children)
    job = next((tmp_path / "tuner").glob("*.cluster/job.yaml")).read_text()
    assert f"'{server}'" in job  # the store a worker with no variable of ours reaches
