"""One contract suite, run against every store the pipeline supports (Optuna's storage
tests, for `TrackingStore`): a SQLite file, a real `mlflow server` and a real PostgreSQL
database. Each backend starts once for the module; each test uses its own experiment."""

from __future__ import annotations

import itertools
import shutil
import time

import numpy as np
import pytest

from pipeline.tracking import Kind, Predictions, Status, Tag, TrialRecord
from pipeline.tracking.protocol import TrackingStore

pytestmark = pytest.mark.e2e  # a server and a database cluster

_names = itertools.count()


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory, store_template):
    from pipeline.tracking.mlflow_server import mlflow_server
    from tests.forked_cli import start_server_forked

    folder = tmp_path_factory.mktemp("contract-server")
    shutil.copy(store_template, folder / "server.db")
    db = f"sqlite:///{folder}/server.db"
    with mlflow_server(db, folder, folder / "artifacts", start=start_server_forked) as base:
        yield base


@pytest.fixture(scope="module")
def postgresql_uri(postgres):
    return postgres.uri


@pytest.fixture(params=["sqlite", "server", "postgresql"])
def tracker(request, tmp_path, tmp_path_factory) -> TrackingStore:
    from pipeline.tracking.store import Tracker

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path_factory.getbasetemp()}/contract.db"
    else:
        uri = request.getfixturevalue(f"{request.param}_uri")
    tracker = Tracker(
        uri,
        f"contract-{request.node.name}-{next(_names)}",
        str(tmp_path / "artifacts"),
        outage_budget_s=5,
        heartbeat_s=0,
        stale_after_s=0,
    )
    tracker.connect()
    assert isinstance(tracker, TrackingStore)
    return tracker


def _search(tracker: TrackingStore, name: str):
    return tracker.run(name, tags={Tag.KIND: Kind.SEARCH, Tag.SEARCH_ID: name})


def _trial(tracker: TrackingStore, number: int, **tags):
    return tracker.run(
        f"trial-{number}",
        tags={Tag.KIND: Kind.TRIAL, Tag.TRIAL_ID: f"{number:02d}", **tags},
        nested=True,
    )


def test_every_run_ends_with_a_status_and_reads_back_typed(tracker):
    with _search(tracker, "lifecycle") as parent:
        with _trial(tracker, 0, **{Tag.CONFIG_HASH: "h0"}):
            tracker.log_params({"model.units": 16})
            for epoch, acc in enumerate([0.5, 0.7, 0.8]):
                tracker.log_metrics({"val_accuracy": acc}, step=epoch)
        with pytest.raises(ValueError), _trial(tracker, 1):
            raise ValueError("bad trial")
        with pytest.raises(KeyboardInterrupt), _trial(tracker, 2):
            raise KeyboardInterrupt
    parent_id = parent.info.run_id
    search = tracker.find_search("lifecycle")
    assert search is not None and search.run_id == parent_id and search.status == Status.FINISHED
    assert [s.run_id for s in tracker.live_searches()] == [parent_id]
    trials = tracker.trial_runs(parent_id)
    assert [t.trial_id for t in trials] == ["00", "01", "02"]  # oldest first
    assert [t.status for t in trials] == [Status.FINISHED, Status.FAILED, Status.KILLED]
    assert trials[1].error == "ValueError: bad trial" and trials[2].interrupted
    assert trials[0].params["model.units"] == "16" and trials[0].metrics["val_accuracy"] == 0.8
    assert tracker.metric_history(trials[0].run_id, "val_accuracy") == {0: 0.5, 1: 0.7, 2: 0.8}
    assert [t.trial_id for t in tracker.trial_runs(parent_id, status=Status.FAILED)] == ["01"]
    replicate = tracker.finished_replicate(parent_id, "h0")
    assert replicate is not None and replicate.run_id == trials[0].run_id
    assert tracker.finished_replicate(parent_id, "other") is None
    assert tracker.get_trial_run(trials[0].run_id).parent_id == parent_id


def test_reads_are_incremental_and_by_kind(tracker):
    with _search(tracker, "incremental") as parent:
        with _trial(tracker, 0):
            pass
        cut = int(time.time() * 1000) + 1
        time.sleep(0.05)
        with _trial(tracker, 1):
            pass
        with tracker.run("tfidf-lr", tags={Tag.KIND: Kind.REFERENCE}, nested=True):
            pass
    parent_id = parent.info.run_id
    assert [t.trial_id for t in tracker.trial_runs(parent_id, ended_since_ms=cut)] == ["01"]
    references = tracker.trial_runs(parent_id, kind=Kind.REFERENCE)
    assert [r.name for r in references] == ["tfidf-lr"]
    assert len(tracker.trial_runs([parent_id, "no-such-parent"])) == 2


def test_runs_a_dead_process_left_running_are_closed(tracker):
    from mlflow.tracking import MlflowClient

    with _search(tracker, "dead") as parent:
        parent_id = parent.info.run_id
    client = MlflowClient(tracking_uri=tracker.uri)
    left = client.create_run(  # what a killed process leaves: RUNNING, never ended
        tracker.experiment_id,
        tags={
            Tag.KIND: Kind.TRIAL,
            "mlflow.parentRunId": parent_id,
            Tag.HEARTBEAT: str(int(time.time()) - 3600),
            Tag.WORKER: "worker-1",
        },
    )
    assert tracker.close_interrupted(parent_id, worker="worker-2") == 0  # another worker's
    assert tracker.close_interrupted(parent_id) == 1
    closed = tracker.get_trial_run(left.info.run_id)
    assert closed.status == Status.FAILED and closed.interrupted
    stale = client.create_run(
        tracker.experiment_id, tags={Tag.HEARTBEAT: str(int(time.time()) - 3600)}
    )
    tracker.stale_after_s = 60
    assert tracker.close_stale() == 1
    assert tracker.get_trial_run(stale.info.run_id).status == Status.FAILED


def test_artifacts_round_trip_and_missing_ones_are_named(tracker):
    from pipeline.tracking.store import TrackingError

    record = TrialRecord(hyperparameters={"units": 16}, seed=3, data_fingerprint="abc")
    predictions = Predictions(
        np.arange(4), np.array([0, 1, 1, 0]), np.full((4, 2), 0.5, dtype="float32")
    )
    with _search(tracker, "artifacts") as parent:
        with _trial(tracker, 0) as with_files:
            tracker.log_text("hello", "notes/hello.txt")
            tracker.log_trial_record(record)
            tracker.log_predictions(predictions)
            tracker.log_dict({"a": 1}, "config.json")
        with _trial(tracker, 1) as bare:
            pass
    run_id = with_files.info.run_id
    assert tracker.read_text(run_id, "notes/hello.txt") == "hello"
    assert tracker.read_trial_record(run_id) == record
    back = tracker.read_predictions(run_id)
    assert back is not None and np.array_equal(back.y, predictions.y)
    assert np.allclose(back.probs, predictions.probs)
    assert tracker.read_predictions(bare.info.run_id) is None  # logged none: not an error
    with pytest.raises(TrackingError, match="notes/absent.txt"):
        tracker.read_text(run_id, "notes/absent.txt")
    with pytest.raises(TrackingError, match="no-such-run"):
        tracker.get_trial_run("no-such-run")
    tracker.set_run_tag(parent.info.run_id, Tag.BEST_RUN_ID, run_id)
    assert tracker.find_search("artifacts").best_run_id == run_id
