"""What the user did not hand over stays untouched, and bad input is one line (#52):
hostile search names, unknown `+` keys, the search's lock, the report of a pruned
search, predictions beside input columns, plugin code shipped with a model, a 403."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import ConfigError, compose_config
from pipeline.runtime.checks import validate_config

HOSTILE = ["..", ".", "/tmp/victim", "a/../../b", "~", "", "x" * 300, "a\x00b", "a\nb", "-rf"]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_a_search_name_that_is_not_one_plain_folder_name_is_refused(name):
    cfg = compose_config(["+experiment=quick"])
    cfg.search.name = name
    with pytest.raises(ConfigError, match=r"^search\.name: .* is not a plain name"):
        validate_config(cfg)


def test_hostile_names_on_the_command_line_touch_nothing(tmp_path, run_cli):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    store = [f"tracking.uri=sqlite:///{tmp_path}/s/mlflow.db", f"tuner.directory={tmp_path}/t"]
    result = run_cli("search", "+experiment=quick", f"search.name={victim}", *store)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: search.name: '{victim}' is not a plain name")
    assert (victim / "keep").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # no store, no folder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+train.epocs=10", "train.epocs: no such key in the config schema; did you mean "
                            "'train.epochs'?"),
        ("+data.csv.seperator=tab", "data.csv.seperator: no such key"),
        ("+model.embeddings.sorce=glove", "model.embeddings.sorce: no such key"),
        ("+surprise=1", "surprise: no such key"),
        ("+experimnet=quick", "experimnet: no such key in the config schema; did you mean "
                              "'+experiment=quick'?"),  # a preset's group, misspelt
    ],
)  # fmt: skip
def test_an_unknown_key_added_with_plus_is_refused_naming_it(override, message):
    preset = ["data=airline_tweets"] if "csv" in override else []
    cfg = compose_config([*preset, override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(message)


def test_a_bare_word_among_the_overrides_is_one_line_naming_it(capsys):
    """`python -m pipeline.search mine`: a name where an override goes, named in one line
    (Hydra's own words were "Error parsing override 'mine'")."""
    from tests.conftest import search_command_in_process

    assert search_command_in_process("+experiment=quick", "mine") == 2
    err = capsys.readouterr().err
    assert err == ("error: config: 'mine' is not an override: an override is key=value "
                   "(search.name=mine names a search)\n")  # fmt: skip


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("data=airline", "data=airline: no such option; did you mean data=airline_tweets? "
                         "known: airline_tweets, csv, jsonl, parquet, synthetic, text_dir"),
        ("+experiment=quik", "+experiment=quik: no such option; did you mean +experiment=quick?"),
        ("train.epocs=3", "train.epocs: no such key in the config schema; did you mean "
                          "'train.epochs'?"),  # without `+`: Hydra refuses it itself
        ("modle.units=3", "modle: no such key in the config schema; did you mean 'model'?"),
    ],
)  # fmt: skip
def test_an_option_or_key_that_does_not_exist_is_one_line_with_the_closest(override, line, capsys):
    from tests.conftest import search_command_in_process

    assert search_command_in_process(override) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config: {line}") and err.count("\n") == 1, err


def test_keys_of_open_sections_and_plugin_sections_stay_accepted(registry_restored):
    plugin = "tests.plugins.jsonl_data"
    space = "+search_space.scaled_mean.scale={type: choice, values: [1, 2]}"
    cfg = compose_config([f"plugins=[{plugin}]", space, "model.scaled_mean.scale=2"])
    validate_config(cfg)
    cfg = compose_config([f"plugins=[{plugin}]", "+model.scaled_mean.scael=2"])
    with pytest.raises(ConfigError, match=r"^model\.scaled_mean\.scael: no such key.*'model"
                                          r"\.scaled_mean\.scale'"):  # fmt: skip
        validate_config(cfg)


def test_one_live_holder_per_search_and_a_free_generated_name(tmp_path):
    import subprocess
    import sys

    from pipeline.errors import SearchError
    from pipeline.search import ownership

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.search import ownership\n"
         f"ownership.hold({str(tmp_path)!r}, 'taken'); print('held', flush=True); "
         "time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SearchError, match=rf"'taken' is running in another process \(pid "
                                              rf"{holder.pid} on "):  # fmt: skip
            ownership.hold(tmp_path, "taken")
        # the store already has 'new' (finished in this second): the next suffix
        assert ownership.hold_new_name(tmp_path, "new", lambda n: n == "new") == "new-2"
        assert ownership.hold_new_name(tmp_path, "taken", lambda n: False) == "taken-2"
    finally:
        holder.kill()
        holder.wait()
    ownership.hold(tmp_path, "taken")  # a killed holder's lock is free again
    ownership.hold(tmp_path, "taken")  # held by this process already: fine


def test_the_report_table_of_a_search_with_pruned_trials_and_a_reference():
    from pipeline.reporting.markdown import leaderboard_markdown

    board = pd.DataFrame(
        {
            "data": ["d", "d", "d"],
            "configuration": ["attn", "mean", "tfidf-lr"],
            "seeds": [1, 1, 1],
            "val_accuracy_mean": [0.9, 0.8, 0.99],
            "pruned": [0.0, 1.0, float("nan")],  # the reference row has no pruner
        }
    )
    table = leaderboard_markdown(board, "val_accuracy")
    assert "| tfidf-lr | 1 | - |" in table and "| mean | 1 | 1 |" in table


def test_predictions_never_overwrite_an_input_column():
    from pipeline.serving.batch import beside

    rows = pd.DataFrame({"id": [1, 2], "label": ["pos", "neg"], "pred_label": ["x", "y"]})
    scored = pd.DataFrame({"label": ["a", "b"], "p_a": [0.9, 0.2]})
    out = beside(rows, scored)
    assert list(out.columns) == ["id", "label", "pred_label", "pred_pred_label", "p_a"]
    assert out["label"].tolist() == ["pos", "neg"]
    assert out["pred_pred_label"].tolist() == ["a", "b"]


def test_plugin_modules_are_copied_at_their_import_path(tmp_path):
    from pipeline.serving.text_model import plugin_code

    tops = plugin_code(["tests.plugins.gated_pooling", "json"], tmp_path)
    assert sorted(tops) == sorted([str(tmp_path / "tests"), str(tmp_path / "json")])
    assert (tmp_path / "tests" / "__init__.py").is_file()
    assert (tmp_path / "tests" / "plugins" / "gated_pooling.py").is_file()
    assert not (tmp_path / "tests" / "test_safety.py").exists()  # the module, not its package
    assert (tmp_path / "json" / "decoder.py").is_file()  # a package: whole


def test_a_refused_permission_is_told_apart_from_other_errors():
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.connection import refused_permission

    class Response:
        status_code = 403

    http = type("HTTPError", (Exception,), {"response": Response()})("403 Client Error")
    assert refused_permission(http)
    assert refused_permission(
        MlflowException(
            "API request to endpoint /api/2.0/mlflow/runs/create failed with "
            "error code 403 != 200. Response body: 'Permission denied'"
        )  # fmt: skip
    )
    assert not refused_permission(MlflowException("Run 'abc' not found"))
    assert not refused_permission(ConnectionError("connection refused"))


def test_a_reader_with_a_shorter_patience_does_not_close_a_live_run(store):
    import time

    from pipeline.tracking.store import Tracker

    writer = Tracker(store.uri, "attention-search", str(store.path / "a"), stale_after_s=3600)
    writer.connect()
    client = store.client()
    with writer.run("live search", tags={"kind": "search"}) as run:
        live = run.info.run_id
        client.set_tag(live, "heartbeat", str(int(time.time()) - 100))  # a slow beat
        assert client.get_run(live).data.tags["stale_after_s"] == "3600"
        dead = client.create_run(writer.experiment_id, run_name="old", tags={"kind": "trial"})
        client.set_tag(dead.info.run_id, "heartbeat", str(int(time.time()) - 100))
        reader = Tracker(store.uri, "attention-search", str(store.path / "a"), stale_after_s=5)
        reader.connect()  # closes stale runs, as every command does
        assert reader.close_stale() == 0
        assert client.get_run(live).info.status == "RUNNING"
        assert client.get_run(dead.info.run_id).info.status == "FAILED"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tracking.heartbeat_s=900", "tracking.heartbeat_s"),
        ("tracking.heartbeat_s=0", "tracking.heartbeat_s"),
        ("tracking.outage_budget_s=inf", "tracking.outage_budget_s"),
        ("tracking.stale_after_s=-1", "tracking.stale_after_s"),
    ],
)
def test_heartbeat_and_budgets_are_checked(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=rf"^{key}: must be"):
        validate_config(cfg)


def test_a_server_whose_store_is_away_is_in_an_outage_though_its_health_answers():
    """MLflow's /health does not touch the database; the guard probes with a store read."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.tracking.outage import OutageGuard

    class DatabaseDown(BaseHTTPRequestHandler):
        down = True

        def do_GET(self):
            healthy = self.path == "/health" or not self.down
            self.send_response(200 if healthy else 503)
            self.end_headers()
            self.wfile.write(b"OK" if healthy else b'{"error_code": "TEMPORARILY_UNAVAILABLE"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DatabaseDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        guard = OutageGuard(f"http://127.0.0.1:{server.server_port}", budget_s=60)
        assert guard.is_outage(RuntimeError("an error whose text names no outage"))
        DatabaseDown.down = False  # the store answers again: an error is the call's own
        assert not guard.is_outage(RuntimeError("RESOURCE_DOES_NOT_EXIST: no run 'x'"))
        for text in ("failed with error code 500 != 200", "TEMPORARILY_UNAVAILABLE: db"):
            assert guard.is_outage(RuntimeError(text))  # said by the error itself
    finally:
        server.shutdown()


def test_a_config_read_from_a_store_is_data_never_resolved_here(monkeypatch):
    from pipeline.search.reproduction import stored_config

    monkeypatch.setenv("PLANTED_SECRET", "s3cret")
    cfg = stored_config("data:\n  name: ${oc.env:PLANTED_SECRET}\n  path: 'C:\\\\x\\\\y'\n")
    assert cfg.data.name == "${oc.env:PLANTED_SECRET}"
    assert cfg.data.path == "C:\\\\x\\\\y"
    cfg = stored_config("a: 'x \\\\${y} z'\n")  # an escaped one stays as it was written
    assert cfg.a == "x \\\\${y} z"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped with the reason otherwise)."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("artifacts", ["inline", "background"])
def test_a_full_disk_stops_the_search_in_one_line_and_the_same_command_finishes_it(
    tmp_path, small_disk, run_cli, store_template, artifacts
):
    """Artifacts on a disk that fills mid-search: exit 75 naming the file, no trial lost;
    with room again the same command runs that trial, registers a whole model, and the
    parent ends FINISHED without the first process's error."""
    import os
    import shutil

    from tests.conftest import Store

    shutil.copy(store_template, tmp_path / "mlflow.db")
    store = Store(tmp_path)
    filler = small_disk / "filler"
    stat = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 300_000))  # room: 300 kB
    command = ["search", "+experiment=quick", "tuner.max_trials=2", "search.name=full",
               "tracking.register_best=full", f"tracking.uri={store.uri}",
               f"tracking.artifact_root={small_disk}/art", f"tuner.directory={tmp_path}/t",
               f"hydra.run.dir={tmp_path}/hydra",
               f"tracking.background_artifacts={artifacts == 'background'}"]  # fmt: skip
    first = run_cli(*command)
    assert first.returncode == 75, first.stdout[-3000:] + first.stderr[-3000:]
    line = first.stderr.strip()
    assert line.count("\n") == 0 and f"no space left on the device of {small_disk}/art (" in line
    assert "resume with: python -m pipeline.search" in line and "search.name=full" in line

    filler.unlink()
    again = run_cli(*command)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = store.runs()
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == ["0", "1"]
    assert all(r.data.tags.get("interrupted") == "true" for r in trials if r not in finished)
    client = store.client()
    for run in finished:
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "confusion_matrix.png"} <= logged, logged
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "search"]
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    version = client.get_latest_versions("full")[0]
    assert version.run_id in {r.info.run_id for r in finished}
    assert "MLmodel" in {a.path.split("/")[-1] for a in client.list_artifacts(version.run_id,
                                                                              "model")}  # fmt: skip


def test_a_label_column_that_is_the_text_column_is_refused():
    cfg = compose_config(["data=airline_tweets", "data.csv.label_column=text"])
    with pytest.raises(ConfigError, match=r"^data\.csv\.label_column: 'text' is the text column"):
        validate_config(cfg)


def test_a_foreign_folder_in_a_spool_is_not_a_job(tmp_path):
    from pipeline.tracking.spool import JOB_FILE, pending_jobs

    for name in ("000001-abc123", "notes", ".tmp-000002-abc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / JOB_FILE).write_text("{}")
    (tmp_path / "README").write_text("mine")
    assert [p.name for p in pending_jobs(tmp_path)] == ["000001-abc123"]


def test_jobs_a_stopped_process_left_are_uploaded_inline_before_anything_deletes_them(tmp_path):
    from pipeline.tracking.spool import ArtifactJob, ArtifactSpool, SpoolTarget, write_job

    folder = tmp_path / "spool" / "main"
    folder.mkdir(parents=True)
    source = tmp_path / "note.txt"
    source.write_text("kept")
    job = ArtifactJob("run123")
    job.files["notes/note.txt"] = source
    write_job(job, folder / "000000-run123")
    uploaded = []

    def upload(run_id, local, artifact_path):
        from pathlib import Path

        uploaded.append((run_id, sorted(p.name for p in Path(local).rglob("*") if p.is_file())))

    spool = ArtifactSpool(None, SpoolTarget("sqlite:///x.db", "os:environ", 0.0, 1.0), upload)
    assert spool.finish_left(folder) == 1
    assert uploaded == [("run123", ["note.txt"])]
    assert not list(folder.iterdir())


def test_the_server_warns_when_it_listens_beyond_loopback_without_auth(run_cli):
    result = run_cli("server", "--host", "0.0.0.0", "tracking.uri=http://127.0.0.1:9")
    assert result.returncode == 2  # then refused for its store, in one line
    assert "warning: --host 0.0.0.0 without --auth" in result.stdout


def test_the_folders_of_killed_servers_are_removed_at_the_next_start(tmp_path):
    import os
    import subprocess
    import sys

    from pipeline.tracking.mlflow_server import SERVER_FOLDER, remove_left_folders

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    for suffix, pid in (("dead", gone), ("alive", str(os.getpid())), ("foreign", None)):
        folder = tmp_path / f"{SERVER_FOLDER}{suffix}"
        folder.mkdir()
        (folder / "basic_auth.ini").write_text("database_uri = sqlite:///auth.db")
        if pid:
            (folder / "pid").write_text(pid)
    remove_left_folders(str(tmp_path))
    left = sorted(p.name.removeprefix(SERVER_FOLDER) for p in tmp_path.iterdir())
    assert left == ["alive", "foreign"]


def test_a_lost_guard_tries_the_server_again_after_a_reset():
    """The upload worker resets its guard each round: one long outage is not for life."""
    from pipeline.tracking.outage import OutageGuard, TrackingOutage

    guard = OutageGuard("http://127.0.0.1:9", budget_s=60)
    guard.lost = True
    with pytest.raises(TrackingOutage):
        guard.call(lambda: "sent")
    guard.reset()
    assert guard.call(lambda: "sent") == "sent"


def test_a_search_started_afresh_uploads_what_the_old_one_left_before_its_folder_goes(store):
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.driver import make_tuner
    from pipeline.tracking.spool import ArtifactJob, write_job
    from pipeline.tracking.store import open_tracker

    cfg = store.compose("+experiment=quick", "search.name=again")
    tracker = open_tracker(cfg.tracking)
    with tracker.run("old search", tags={"kind": "search"}) as old:
        old_id = old.info.run_id
    spool = store.path / "tuner" / "again" / "spool" / "main"
    spool.mkdir(parents=True)
    job = ArtifactJob(old_id)
    job.files["left/note.txt"] = "uploaded before keras-tuner deletes the folder"
    write_job(job, spool / f"000000-{old_id}")
    make_tuner(cfg, prepare(typed_data(cfg.data)), tracker, "again", overwrite=True)
    assert not spool.exists()  # keras-tuner started the folder afresh
    logged = [a.path for a in store.client().list_artifacts(old_id, "left")]
    assert logged == ["left/note.txt"]
