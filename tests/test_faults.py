"""Faults a search must survive: a tracking server that goes away and comes back (or does
not), a killed server launcher, a fresh SQLite store opened by two searches at once, runs
whose process died unseen, concurrent dataset logging, and bad data files.

Real processes, a real `mlflow server`, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.tracking.mlflow_server import (
    free_port,
    server_command,
    server_env,
    stop_server_process,
    wait_for,
)
from tests.conftest import (
    BACKGROUND,
    EXPERIMENT,
    PROJECT_ROOT,
    assert_nothing_running,
    run_searches_together,
    start_server_cli,
)
from tests.forked_cli import popen_python, run_python, start_server_forked

# A search that trains for a while on CPU (so an outage lands mid-trial) and logs per epoch;
# during an outage it tries again at least every 2 s, so it carries on soon after one.
OUTAGE_S = 7  # longer than a trial's training: epochs, artifacts and the run's end wait
STEADY = [
    "tracking.outage_backoff_max_s=2",
    "+experiment=quick",
    "tuner.max_trials=2",
    "train.epochs=4",
    "data.synthetic.n_examples=800",
    "tracking.log_model=false",
    "attention.enabled=false",
]


class Server:
    """`mlflow server` on a fixed port that a test can SIGKILL (whole process group, as an
    OOM killer or a crashed host would) and start again on the same port and store."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_server_forked(
            server_command(self.tmp_path / "art", "127.0.0.1", self.port),
            server_env(f"sqlite:///{self.tmp_path}/server.db"),
            cwd=self.tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"{self.base}/health", seconds=90)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        wait_until(lambda: not port_open(self.port), 20, "the killed server's port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_server_process(self.proc)

    def runs(self):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.base)
        exp = client.get_experiment_by_name(EXPERIMENT)
        return client.search_runs([exp.experiment_id], max_results=500)


@pytest.fixture
def server(tmp_path, store_template):
    shutil.copy(store_template, tmp_path / "server.db")  # MLflow's schema, migrated once
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds}s for {what}")


class Search:
    """A search CLI in a subprocess whose merged output is collected line by line."""

    def __init__(self, *overrides: str):
        self.proc = popen_python(
            ["-m", "pipeline.search", *overrides],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, seconds: float = 240) -> None:
        wait_until(
            lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
            seconds,
            f"'{text}' in the search output",
        )
        assert any(text in line for line in self.lines), self.output

    def finish(self, seconds: float = 600) -> int:
        code = self.proc.wait(timeout=seconds)
        self._reader.join(timeout=10)
        return code


def search_overrides(tmp_path: Path, base: str, name: str, *extra: str) -> list[str]:
    return [
        *STEADY,
        f"tracking.uri={base}",
        f"tuner.directory={tmp_path}/tuner",
        f"hydra.run.dir={tmp_path}/hydra",
        f"search.name={name}",
        *extra,
    ]


def ride_out(server: Server, search: Search, trained_line: str, outage_s: float) -> None:
    """Kill the server once `trained_line` shows (a trial is training), restart it later."""
    search.wait_for_line(trained_line)
    time.sleep(1.0)  # into the epochs
    server.kill()
    time.sleep(outage_s)
    assert search.proc.poll() is None, f"the search died during the outage:\n{search.output}"
    server.start()


# ---------------------------------------------------------------- outages


@pytest.mark.e2e
def test_an_outage_mid_trial_loses_nothing(tmp_path, server):
    # The artifact worker uploads through the outage too (its own retries). Cluster workers
    # riding out an outage: test_team.py's database stop behind a live server.
    search = Search(*search_overrides(tmp_path, server.base, "outage", BACKGROUND))
    ride_out(server, search, "[trial 1/2]", outage_s=OUTAGE_S)
    code = search.finish()
    assert code == 0, search.output
    assert "unreachable" in search.output and "is back after" in search.output
    runs = server.runs()
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}, [
        (r.info.run_name, r.info.status, r.data.tags.get("error")) for r in runs
    ]
    for trial in trials:  # every epoch's metrics arrived, in order, after the outage
        history = server_client(server).get_metric_history(trial.info.run_id, "val_loss")
        steps = [m.step for m in history]
        assert steps[:4] == [0, 1, 2, 3] and steps == sorted(set(steps))
        logged = {a.path for a in server_client(server).list_artifacts(trial.info.run_id)}
        assert {"confusion_matrix.png", "confusion_matrix.json"} <= logged, logged
    print(search.output)


@pytest.mark.e2e
def test_an_outage_beyond_the_budget_stops_cleanly_and_resumes(tmp_path, server):
    overrides = search_overrides(tmp_path, server.base, "lost", "tracking.outage_budget_s=6")
    search = Search(*overrides)
    search.wait_for_line("[trial 2/2]")
    server.kill()
    code = search.finish(seconds=120)
    errors = [line for line in search.lines if line.startswith("error:")]
    assert code == 75, search.output
    assert len(errors) == 1 and "unreachable for more than 6s" in errors[0]
    assert "Traceback" not in search.output
    resume = errors[0].split("resume with: ", 1)[1].split()
    assert resume[:3] == ["python", "-m", "pipeline.search"] and "search.name=lost" in resume

    server.start()
    resumed = run_python(resume[1:], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stdout
    runs = server.runs()
    assert_nothing_running(runs)
    finished = [
        r for r in runs if r.data.tags.get("kind") == "trial" and r.info.status == "FINISHED"
    ]
    assert sorted(r.data.tags["trial_number"] for r in finished) == ["1", "2"], (
        [(r.info.run_name, r.info.status, r.data.tags) for r in runs],
        search.output,
        resumed.stdout + resumed.stderr,
    )
    interrupted = [r for r in runs if r.data.tags.get("interrupted") == "true"]
    assert all(r.info.status == "FAILED" for r in interrupted)
    assert "Reloading Tuner" not in resumed.stdout


def test_an_outage_before_a_trial_trains_stops_the_search_and_fails_no_trial(store, tmp_path):
    """Pruning reads the store before a trial trains. An outage there must stop the search
    (resumable), not fail that trial and the next ones: keras-tuner never re-runs a FAILED
    trial, so a resumed search would silently skip them."""
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.driver import make_tuner
    from pipeline.search.tuner import TrackingLost
    from pipeline.tracking.store import Tracker

    cfg = store.compose(*STEADY, "tuner.pruning=median")
    dead = Tracker(f"http://127.0.0.1:{free_port()}", EXPERIMENT, str(tmp_path), outage_budget_s=1)
    tuner = make_tuner(cfg, prepare(typed_data(cfg.data)), dead, "dead-server", overwrite=True)
    tuner.parent_run_id = "the-parent-run"
    with pytest.raises(TrackingLost, match="unreachable for more than 1s"):
        tuner.search(verbose=0)
    assert [t.status for t in tuner.oracle.trials.values()] == ["RUNNING"]


def server_client(server: Server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.base)


# ---------------------------------------------------------------- server lifecycle


def test_sigkill_of_the_server_launcher_frees_its_port(tmp_path):
    port = free_port()
    launcher = start_server_cli(tmp_path, port, workers=2)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", seconds=90)
        launcher.kill()  # SIGKILL: no handler runs in the launcher
        launcher.wait()
        wait_until(lambda: not port_open(port), 30, f"port {port} to be free")
        with socket.socket() as s:  # free for a new server (which sets SO_REUSEADDR too)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        if launcher.poll() is None:
            launcher.kill()


# ---------------------------------------------------------------- the SQLite store


@pytest.mark.e2e
def test_two_searches_started_together_on_a_fresh_sqlite_store_both_finish(tmp_path):
    common = [
        "+experiment=quick",
        "tuner.max_trials=1",
        "tracking.log_model=false",
        "attention.enabled=false",
        f"tracking.uri=sqlite:///{tmp_path}/fresh/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
        f"tuner.directory={tmp_path}/tuner",
    ]
    run_searches_together(
        [[*common, f"search.name=twin-{i}", f"hydra.run.dir={tmp_path}/hydra{i}"] for i in (1, 2)],
        timeout=300,
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/fresh/mlflow.db")
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("kind") == "search") == [
        "twin-1",
        "twin-2",
    ]


def test_a_half_migrated_store_is_repaired_when_safe(store):
    from pipeline.tracking.store import Tracker

    db = store.path / "mlflow.db"
    with sqlite3.connect(db) as conn:  # what a migration interrupted mid-batch leaves
        conn.execute("CREATE TABLE _alembic_tmp_tags (key TEXT, value TEXT, run_uuid TEXT)")
    Tracker(store.uri, EXPERIMENT, str(store.path / "a")).connect()
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "_alembic_tmp_tags" not in names and "tags" in names


def test_a_half_migrated_store_that_cannot_be_repaired_is_refused_in_one_line(store, run_cli):
    db = store.path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE tags RENAME TO _alembic_tmp_tags")
    result = run_cli("report", *[o for o in store.overrides if o.startswith("tracking.")])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "half-migrated" in lines[0]
    assert "ALTER TABLE _alembic_tmp_tags RENAME TO tags" in lines[0]


# ---------------------------------------------------------------- stale runs, heartbeats


def test_runs_without_a_heartbeat_are_closed_as_stale_by_the_next_report(store, run_cli):
    from pipeline.tracking.store import Tracker

    tracker = Tracker(store.uri, EXPERIMENT, str(store.path / "artifacts"))
    tracker.connect()
    client = store.client()
    dead = client.create_run(tracker.experiment_id, run_name="dead", tags={"kind": "trial"})
    client.set_tag(dead.info.run_id, "heartbeat", str(int(time.time()) - 3600))
    alive = client.create_run(tracker.experiment_id, run_name="alive", tags={"kind": "trial"})
    client.set_tag(alive.info.run_id, "heartbeat", str(int(time.time())))

    result = run_cli("report", *[o for o in store.overrides if o.startswith("tracking.")])
    assert "closed 1 stale run(s)" in result.stdout, result.stdout + result.stderr
    dead_now, alive_now = client.get_run(dead.info.run_id), client.get_run(alive.info.run_id)
    assert dead_now.info.status == "FAILED"
    assert dead_now.data.tags["stale"] == "true"
    assert dead_now.data.tags["error"].startswith("stale: no heartbeat for")
    assert alive_now.info.status == "RUNNING"


def test_an_open_run_beats_in_the_background(store):
    from pipeline.tracking.store import Tracker

    tracker = Tracker(store.uri, EXPERIMENT, str(store.path / "a"), heartbeat_s=0.2)
    tracker.connect()
    with tracker.run("beating") as run:
        first = int(store.client().get_run(run.info.run_id).data.tags["heartbeat"])
        wait_until(lambda: tracker.heartbeat.beats >= 2, 10, "two heartbeats")
        time.sleep(1.1)
        later = int(store.client().get_run(run.info.run_id).data.tags["heartbeat"])
    assert later > first
    beats = tracker.heartbeat.beats
    time.sleep(0.6)
    assert tracker.heartbeat.beats == beats  # a closed run no longer beats


# ---------------------------------------------------------------- datasets


def test_workers_logging_the_same_dataset_at_once_all_succeed(store):
    """Writers racing to create one new dataset in the store (each round a new one, all
    writers released together): every run links every dataset, none fails. Without the
    retry, about one write in four loses the race with a UNIQUE constraint error here."""
    import numpy as np

    from pipeline.tracking.store import Tracker

    writers, rounds = 6, 5
    first = Tracker(store.uri, EXPERIMENT, str(store.path / "a"))
    first.connect()
    x, y = np.arange(2000).reshape(100, 20), np.arange(100) % 2
    barrier = threading.Barrier(writers)
    errors: list[str] = []

    def write(i: int) -> None:
        tracker = Tracker(store.uri, EXPERIMENT, str(store.path / "a"))
        tracker.experiment_id = first.experiment_id
        with tracker.run(f"writer-{i}"):  # MLflow's active run is per thread
            for r in range(rounds):
                barrier.wait()
                try:
                    tracker.log_dataset(x, y, f"race-{r}", "training", "race", f"digest-{r}")
                except Exception as err:
                    errors.append(str(err)[:200])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    runs = store.runs()
    assert len(runs) == writers and {r.info.status for r in runs} == {"FINISHED"}
    assert all(len(r.inputs.dataset_inputs) == rounds for r in runs)


# ---------------------------------------------------------------- data checks


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def csv_rows(n: int, empty_labels: int = 0, blank_texts: bool = False) -> list[tuple[str, str]]:
    rows = [
        (
            "" if blank_texts else f"great flight number {i}" if i % 2 else f"awful delay {i}",
            "pos" if i % 2 else "neg",
        )
        for i in range(n)
    ]
    for i in range(empty_labels):
        rows[i * 3] = (rows[i * 3][0], "  ")
    return rows


def test_rows_with_an_empty_label_are_dropped_and_counted(tmp_path, store):
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.run import describe_data

    path = write_csv(tmp_path / "d.csv", csv_rows(80, empty_labels=16))
    data = prepare(typed_data(store.compose("data=csv", f"data.csv.path={path}").data))
    assert data.class_names == ["neg", "pos"]
    assert sum(len(y) for y in data.y.values()) == 64
    assert "(dropped 16 rows with no label)" in describe_data(data)


def test_empty_labels_are_refused_when_asked(tmp_path, store):
    from pipeline.config import typed_data
    from pipeline.data import DataError, prepare

    path = write_csv(tmp_path / "d.csv", csv_rows(40, empty_labels=2))
    cfg = store.compose("data=csv", f"data.csv.path={path}", "data.csv.drop_missing_labels=false")
    with pytest.raises(DataError, match="2 row\\(s\\) with an empty 'label'"):
        prepare(typed_data(cfg.data))


def test_dropping_switch_leaves_the_fingerprint_of_clean_data_alone(tmp_path, store):
    from pipeline.config import typed_data
    from pipeline.data import prepare

    path = write_csv(tmp_path / "d.csv", csv_rows(40))
    on = prepare(typed_data(store.compose("data=csv", f"data.csv.path={path}").data))
    off = prepare(
        typed_data(
            store.compose(
                "data=csv", f"data.csv.path={path}", "data.csv.drop_missing_labels=false"
            ).data
        )
    )
    assert on.fingerprint == off.fingerprint


def test_all_blank_texts_and_a_folder_path_fail_in_one_line(tmp_path, store, run_cli):
    blank = write_csv(tmp_path / "blank.csv", csv_rows(40, blank_texts=True))
    for path, expected in ((blank, "every text is empty"), (tmp_path, "is a folder, not a file")):
        result = run_cli("search", *store.overrides, "data=csv", f"data.csv.path={path}")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
