"""Team set-up on loopback: a real PostgreSQL store (a throwaway cluster: initdb + pg_ctl),
an MLflow server over it, a 2-worker cluster search, concurrent searches, the report and
reproduce reading from it, credentials kept out of every log; basic auth on the server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.tracking.mlflow_server import free_port, mlflow_server, wait_for
from tests.conftest import (
    EXPERIMENT,
    PROJECT_ROOT,
    assert_nothing_running,
    migrated_sqlite,
    run_searches_together,
    search_command_in_process,
)
from tests.forked_cli import popen_python, run_python, start_server_forked

pytestmark = pytest.mark.e2e

QUICK = ["+experiment=quick", "tracking.log_model=false", "attention.enabled=false"]


def runs_of(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=500)


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_python(
        ["-m", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_tracking_postgres_composes_a_uri_without_password_from_the_environment(monkeypatch):
    from pipeline.config import compose_config

    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    cfg = compose_config(["tracking=postgres"])
    assert cfg.tracking.uri == "postgresql://mlflow@db.example:6543/mlflow"


def test_two_worker_search_on_a_postgres_server_rides_out_a_database_stop_then_reports(
    tmp_path, postgres, capsys
):
    """A 2-worker cluster search on an MLflow server over PostgreSQL, with PostgreSQL
    stopped for 10 s mid-search while the server stays up (its /health still answers, its
    store calls answer 503 TEMPORARILY_UNAVAILABLE): an outage, ridden out, every trial
    FINISHED once; then the report and reproduce read the same server."""
    import time

    from tests.test_faults import Search

    base_db = postgres.create_database("cluster")
    with mlflow_server(base_db, tmp_path, tmp_path / "served", start=start_server_forked) as base:
        store = [f"tracking.uri={base}", f"hydra.run.dir={tmp_path}/hydra"]
        search = Search(
            *QUICK,
            "cluster=workers",
            "cluster.n_workers=2",
            "tuner.max_trials=2",
            "train.epochs=3",
            "tracking.outage_backoff_max_s=2",
            f"tuner.directory={tmp_path}/tuner",
            "search.name=team",
            *store,
        )
        search.wait_for_line("[trial 1/")
        time.sleep(1.0)  # into the epochs
        postgres.stop()
        try:
            time.sleep(10)
            assert search.proc.poll() is None, search.output
        finally:
            postgres.start()
        assert search.finish() == 0, search.output
        output = search.output
        assert "unreachable" in output and "is back after" in output
        runs = runs_of(base)
        parents = [r for r in runs if r.data.tags.get("kind") == "search"]
        children = [r for r in runs if r.data.tags.get("kind") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2 and len({c.data.tags["trial_id"] for c in children}) == 2
        assert {c.data.tags["worker"] for c in children} == {"worker-1", "worker-2"}
        assert "[worker-1]" in output and "[worker-2]" in output
        assert "open the UI" in output
        parent = parents[0]
        assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
        assert all(c.info.status == "FINISHED" for c in children)
        assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
        assert "test_accuracy" in parent.data.metrics
        assert parent.data.metrics["trials_finished"] == 2
        assert_nothing_running(runs)

        # The report and reproduce commands in-process (their subprocess runs are tested in
        # test_replicates_e2e): what matters here is that they read the team server.
        from pipeline import report, reproduce

        capsys.readouterr()
        code = report.main(["team", "--out", str(tmp_path / "report"), *store])
        assert code == 0, capsys.readouterr().err[-2000:]
        assert (tmp_path / "report" / "report.md").exists()
        assert "team" in (tmp_path / "report" / "report.md").read_text()

        target = parents[0].data.tags["best_run_id"]
        code = reproduce.main([target, *store])
        printed = capsys.readouterr()
        assert code == 0, printed.err[-2000:]
        assert f"match: metrics of {target}" in printed.out
    # The server kept its rows in PostgreSQL: read them again with no server in between.
    direct = runs_of(base_db)
    assert {r.info.run_id for r in direct} >= {r.info.run_id for r in runs}


def test_four_searches_started_at_once_on_a_fresh_postgres_database_leak_no_password(
    tmp_path, postgres
):
    """All four open a database with no MLflow schema at the same moment (the advisory
    creation lock serialises the migration). The password comes from PGPASSWORD, a
    .pgpass file, or the URI. The URI's search is a cluster search with its artifacts
    uploaded by the background worker, and MLFLOW_TRACKING_PASSWORD holds another secret;
    it is then reported and a trial reproduced: neither password is in any artifact,
    param, tag, report, printed line, job.yaml or command line (`ps`) of theirs."""
    import threading
    import time

    from tests.conftest import BACKGROUND

    uri = postgres.create_database("four")
    with_password = uri.replace("mlflow@", f"mlflow:{postgres.password}@")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:four:mlflow:{postgres.password}\n")
    pgpass.chmod(0o600)
    secret_env = "env-secret-4f2a9c"
    secrets = {"MLFLOW_TRACKING_PASSWORD": secret_env, "MLFLOW_TRACKING_USERNAME": "someone"}
    without = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    environments = [
        {**os.environ, "PGPASSWORD": "wrong", **secrets},  # the URI's password wins
        {**without, "PGPASSFILE": str(pgpass)},  # a .pgpass file
        dict(os.environ),  # PGPASSWORD
        dict(os.environ),
    ]
    store = [f"tracking.uri={with_password}", f"tracking.artifact_root={tmp_path}/artifacts"]
    own = [["cluster=workers", "cluster.n_workers=1", BACKGROUND, "tracking.log_model=true"]]
    seen: list[str] = []
    done = threading.Event()

    def sample_command_lines() -> None:
        while not done.is_set():
            for p in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_command_lines, daemon=True)
    sampler.start()
    try:
        outputs = run_searches_together(
            [
                [
                    *QUICK,
                    "tuner.max_trials=1",
                    "train.epochs=1",
                    f"tracking.uri={with_password if i == 0 else uri}",
                    f"tracking.artifact_root={tmp_path}/artifacts",
                    f"tuner.directory={tmp_path}/tuner",
                    f"hydra.run.dir={tmp_path}/hydra{i}",
                    f"search.name=four-{i}",
                    *(own[i] if i < len(own) else []),
                ]
                for i in range(4)
            ],
            envs=environments,
        )
        report = cli("pipeline.report", "four-0", "--out", str(tmp_path / "report"), *store,
                     env=secrets)  # fmt: skip
        assert report.returncode == 0, report.stderr[-2000:]
        runs = runs_of(uri)
        trial = next(
            r for r in runs
            if r.data.tags.get("kind") == "trial" and r.data.tags["search_id"] == "four-0"
        )  # fmt: skip
        again = cli("pipeline.reproduce", trial.info.run_id, *store, env=secrets)
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        done.set()
        sampler.join()
    runs = runs_of(uri)
    parents = {r.info.run_name: r for r in runs if r.data.tags.get("kind") == "search"}
    assert sorted(parents) == ["four-0", "four-1", "four-2", "four-3"]
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert_nothing_running(runs)
    assert "postgresql://***@" in parents["four-0"].data.params["tracking.uri"]

    texts = {"printed": "".join([*outputs, *(r.stdout + r.stderr for r in (report, again))])}
    texts["command lines"] = "\n".join(seen)
    for run in runs:  # the four searches' runs and the reproduction
        texts[f"run {run.info.run_name}"] = repr((run.data.params, run.data.tags))
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 5_000_000]
    files = [p for p in files if p != pgpass]
    assert any(p.name == "job.yaml" for p in files) and any(p.name == "report.md" for p in files)
    assert any(p.name == "config.yaml" for p in files)  # the parents', uploaded
    assert any(p.name == "MLmodel" for p in files)  # uploaded by the background worker
    for path in files:
        texts[str(path)] = path.read_bytes().decode(errors="replace")
    for secret in (postgres.password, secret_env):
        leaks = [where for where, text in texts.items() if secret in text]
        assert leaks == [], leaks
    assert any(f"mlflow:{postgres.password}@" not in c and "pipeline.search" in c for c in seen)


def test_server_keeps_the_password_out_of_its_output_and_command_line(tmp_path, postgres):
    """`python -m pipeline.server` on PostgreSQL with the password in the URI: served on
    loopback (the URL it prints), the password in no printed line and no command line."""
    uri = postgres.uri.replace("mlflow@", f"mlflow:{postgres.password}@")
    port = free_port()
    proc = popen_python(
        ["-m", "pipeline.server", "--port", str(port), f"tracking.uri={uri}"]
        + [f"tracking.artifact_root={tmp_path}/served"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PGPASSWORD": "wrong"},
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", seconds=90)
        command_lines = [
            p.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            for p in Path("/proc").glob("[0-9]*/cmdline")
            if p.exists()
        ]
        # The MLflow server processes get the store through their environment, not argv.
        servers = [c for c in command_lines if "-m mlflow server" in c and f" {port}" in c]
        assert servers
        assert not [c for c in servers if postgres.password in c]
    finally:
        os.killpg(proc.pid, 15)
        output, _ = proc.communicate(timeout=60)
    assert "store postgresql://***@127.0.0.1" in output
    assert f"tracking server: http://127.0.0.1:{port}" in output
    assert postgres.password not in output


def test_basic_auth_server_signs_searches_in_a_read_user_reports_and_is_refused_a_search(
    tmp_path, monkeypatch, capsys
):
    """The teammate journey (README "Team set-up"): a server whose default permission is
    READ; a wrong password and none are refused; the admin's search runs; a READ user's
    report with --out is written (and says why it is not logged on the parent run); the
    READ user's search is refused in one line naming the permission and the experiment."""
    admin = {
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "team-password-123",
    }
    port = free_port()
    store = [
        f"tracking.uri=sqlite:///{migrated_sqlite(tmp_path / 'mlflow.db')}",
        f"tracking.artifact_root={tmp_path}/served",
        f"tracking.auth_db=sqlite:///{tmp_path}/auth.db",
        "tracking.auth_default_permission=READ",
    ]
    from pipeline import report

    short = {"MLFLOW_AUTH_ADMIN_PASSWORD": "short"}
    first = cli("pipeline.server", "--auth", "--port", str(port), *store, env=short, timeout=120)
    assert first.returncode == 2
    assert first.stderr.strip().count("\n") == 0
    assert "set MLFLOW_AUTH_ADMIN_PASSWORD" in first.stderr

    proc = popen_python(
        # One uvicorn worker: two (the default) are the launcher test's, in test_faults.
        ["-m", "pipeline.server", "--auth", "--port", str(port), "--workers", "1", *store],
        cwd=PROJECT_ROOT,
        stdout=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env={**os.environ, **admin},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    search = [
        *QUICK,
        "tuner.max_trials=1",
        "train.epochs=1",
        f"tracking.uri={base}",
        f"tuner.directory={tmp_path}/tuner",
        f"hydra.run.dir={tmp_path}/hydra",
    ]

    def as_user(user: dict[str, str | None], command) -> tuple[int, str, str]:
        """A command run in-process signed in as `user` (the command's own path; the
        signed-in search below runs the real CLI)."""
        with monkeypatch.context() as env:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                if user.get(key):
                    env.setenv(key, user[key])
                else:
                    env.delenv(key, raising=False)
            capsys.readouterr()
            code = command()
            printed = capsys.readouterr()
        return code, printed.out, printed.err

    try:
        wait_for(f"{base}/health", seconds=120)
        for user, password in (("admin", "nope"), (None, None)):
            who = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
            code, out, err = as_user(who, lambda: search_command_in_process(*search))
            assert code == 2, out[-2000:] + err[-2000:]
            line = err.strip()
            assert line.count("\n") == 0 and "(HTTP 401)" in line, line
            assert "epoch" not in out  # refused before any training
        signed_in = {
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "team-password-123",
        }
        ok = cli("pipeline.search", *search, "search.name=signed-in", env=signed_in)
        assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        os.environ.update(signed_in)
        try:
            runs = runs_of(base)
        finally:
            for key in signed_in:
                os.environ.pop(key, None)
        assert [r.info.run_name for r in runs if r.data.tags.get("kind") == "search"] == [
            "signed-in"
        ]

        reader = {"MLFLOW_TRACKING_USERNAME": "reader",
                  "MLFLOW_TRACKING_PASSWORD": "reader-password-123"}  # fmt: skip
        create_user(base, signed_in, reader)
        out = tmp_path / "report"
        code, printed, err = as_user(
            reader, lambda: report.main(["signed-in", "--out", str(out), f"tracking.uri={base}"])
        )
        assert code == 0, printed[-2000:] + err[-2000:]
        assert (out / "report.md").is_file()
        assert "user 'reader' may not write to experiment 'attention-search'" in printed
        code, printed, err = as_user(
            reader, lambda: search_command_in_process(*search, "search.name=mine")
        )
        assert code == 2, printed[-2000:] + err[-2000:]
        line = err.strip()
        assert line.count("\n") == 0 and "(HTTP 403)" in line and "'reader'" in line, line
        assert "experiment 'attention-search'" in line
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def create_user(base: str, admin: dict, user: dict) -> None:
    """MLflow's auth REST API, as an admin creates a teammate's account."""
    import base64
    import json
    import urllib.request

    who = f"{admin['MLFLOW_TRACKING_USERNAME']}:{admin['MLFLOW_TRACKING_PASSWORD']}"
    body = {"username": user["MLFLOW_TRACKING_USERNAME"],
            "password": user["MLFLOW_TRACKING_PASSWORD"]}  # fmt: skip
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/users/create",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(who.encode()).decode()},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=30).read()


@pytest.mark.parametrize(("overrides", "ttl"), [([], 60), (["tracking.auth_cache_s=0"], 0)])
def test_the_auth_server_checks_a_password_once_per_cache_window(
    tmp_path, monkeypatch, overrides, ttl
):
    """MLflow's basic auth hashes the password (scrypt, ~0.33 s here) on every request
    unless its credential cache is on: the ini the server writes turns it on for
    `tracking.auth_cache_s`, read back by MLflow's own config reader."""
    import importlib.util

    import mlflow

    from pipeline.config import compose_config
    from pipeline.tracking.mlflow_server import auth_config

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "team-password-123")
    cfg = compose_config([f"tracking.auth_db=sqlite:///{tmp_path}/auth.db", *overrides])
    env = auth_config(cfg.tracking, tmp_path)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", env["MLFLOW_AUTH_CONFIG_PATH"])
    # The config module alone: the auth package's __init__ builds the whole auth app.
    path = Path(mlflow.__file__).parent / "server" / "auth" / "config.py"
    spec = importlib.util.spec_from_file_location("mlflow_auth_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    read = module.read_auth_config()
    assert read.auth_cache_ttl_seconds == ttl
    assert read.authorization_function == module.DEFAULT_AUTHORIZATION_FUNCTION
