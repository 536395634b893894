"""No silent faults: each case below used to pass for something else (a finished trial
trained again, an outage read as "not found", statistics downgraded without a word,
artifacts in the wrong place, a skipped lock, wrong labels). One test per case."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pipeline.tracking.mlflow_server import free_port
from tests.conftest import EXPERIMENT

QUICK = ["+experiment=quick", "tracking.log_model=false", "attention.enabled=false"]


# ---------------------------------------------------------------- 1. nothing trains twice


def test_a_replicate_finished_in_the_store_is_not_trained_again_by_a_worker(store, capsys):
    """A cluster worker (or a chief killed between a run reaching FINISHED and the oracle
    hearing of it) has no summary rows of that run: before training a replicate it asks the
    store, hands the logged score to the oracle and logs nothing new."""
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search import run_search
    from pipeline.search.driver import make_tuner
    from pipeline.tracking import Tracker

    cfg = store.compose(*QUICK, "search.name=once", "tuner.max_trials=1")
    outcome = run_search(cfg)
    (finished,) = [r for r in store.runs() if r.data.tags["kind"] == "trial"]
    score = finished.data.metrics["val_accuracy"]

    tracker = Tracker.from_config(cfg.tracking)
    tracker.connect()
    tracker.parent_run_id = outcome.parent_run_id
    # A fresh tuner of the same search, as a worker starts: no rows, a new oracle that
    # proposes the same first trial (same tuner seed).
    worker = make_tuner(cfg, prepare(typed_data(cfg.data)), tracker, "once-again", overwrite=True)
    worker.parent_run_id = outcome.parent_run_id
    capsys.readouterr()
    worker.search(verbose=0)
    out = capsys.readouterr().out
    assert f"already finished (run {finished.info.run_id})" in out
    assert len([r for r in store.runs() if r.data.tags["kind"] == "trial"]) == 1
    (trial,) = worker.oracle.trials.values()
    assert trial.status == "COMPLETED" and trial.score == pytest.approx(score)


# ---------------------------------------------------------------- 2. an outage is an outage


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t.get_trial_run("0" * 32),
        lambda t: t.read_text("0" * 32, "config.yaml"),
        lambda t: t.read_predictions("0" * 32),
        lambda t: t.trial_runs("0" * 32),
    ],
    ids=["get_trial_run", "read_text", "read_predictions", "trial_runs"],
)
def test_an_outage_while_reading_is_an_outage_not_not_found(tmp_path, monkeypatch, read):
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as Tracker.connect sets
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")

    from pipeline.tracking import Tracker
    from pipeline.tracking.outage import TrackingOutage

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    dead = Tracker(uri, EXPERIMENT, str(tmp_path), outage_budget_s=0.5)
    dead.experiment_id = "0"
    mlflow.set_tracking_uri(uri)
    with pytest.raises(TrackingOutage, match="unreachable for more than"):
        read(dead)


def test_a_run_id_that_is_not_there_is_still_not_found(store):
    from pipeline.tracking import Tracker
    from pipeline.tracking.store import TrackingError

    tracker = Tracker.from_config(store.compose().tracking)
    tracker.connect()
    with pytest.raises(TrackingError, match="not found in this store"):
        tracker.get_trial_run("0" * 32)


# ---------------------------------------------------------------- 3. predictions


@pytest.fixture(scope="module")
def searched(tmp_path_factory, store_template):
    """One small search with two seeds, shared by the two predictions tests: the refused
    read fails before any file is read, so a file corrupted by the other test does not
    change what it sees, in whichever order they run."""
    import shutil

    from pipeline.search import run_search
    from tests.conftest import Store

    path = tmp_path_factory.mktemp("predictions")
    shutil.copy(store_template, path / "mlflow.db")
    store = Store(path)
    run_search(
        store.compose(*QUICK, "search.name=preds", "tuner.max_trials=2", "search.seeds=[0,1]")
    )
    return store


def test_a_refused_read_of_predictions_is_an_error_not_a_fallback(searched, monkeypatch):
    from mlflow.exceptions import RestException

    from pipeline.reporting.search_report import run_report
    from pipeline.tracking import connection as store_module
    from pipeline.tracking.store import TrackingError

    real = store_module.client

    class Refusing:
        """The MLflow client as a basic-auth server answers a user without READ."""

        def __getattr__(self, name):
            return getattr(real(), name)

        def list_artifacts(self, *args, **kwargs):
            raise RestException(
                {"error_code": "PERMISSION_DENIED", "message": "Permission denied (HTTP 403)"}
            )

    monkeypatch.setattr(store_module, "client", lambda: Refusing())
    with pytest.raises(TrackingError, match="PERMISSION_DENIED|Permission denied"):
        run_report(searched.tracker(), "preds", out=searched.path / "refused")


def test_a_corrupt_predictions_file_is_named_in_the_report(searched):
    from pipeline.reporting.search_report import run_report

    trial = next(r for r in searched.runs() if r.data.tags["kind"] == "trial")
    path = trial.info.artifact_uri.removeprefix("file://") + "/predictions/val.npz"
    with open(path, "wb") as f:
        f.write(b"not an npz")
    report = run_report(searched.tracker(), "preds", out=searched.path / "corrupt")
    assert "## Runs without per-example predictions" in report.markdown
    line = next(ln for ln in report.markdown.splitlines() if trial.info.run_id in ln)
    assert "predictions/val.npz is unreadable" in line
    assert any(c.method == "paired t-test over seeds" for c in report.comparisons)


# ---------------------------------------------------------------- 4. artifact roots


@pytest.mark.parametrize(
    "root,message",
    [
        ("s3://bucket/x", "No module named|Unable to locate credentials|Could not connect"),
        ("fake://bucket/x", "Could not find a registered artifact repository"),
    ],
)
def test_an_artifact_uri_goes_to_mlflow_untouched_and_fails_in_one_line(
    tmp_path, monkeypatch, root, message
):
    from pipeline.tracking import Tracker
    from pipeline.tracking.store import TrackingError

    monkeypatch.chdir(tmp_path)
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", EXPERIMENT, root)
    with pytest.raises(TrackingError) as err:
        tracker.connect()
    text = str(err.value)
    assert text.startswith(f"tracking.artifact_root: cannot use {root}")
    assert "\n" not in text
    import re

    assert re.search(message, text)
    assert sorted(os.listdir(tmp_path)) == []  # no ./s3:/bucket/x, not even the store


def test_a_file_uri_artifact_root_is_used_as_given(tmp_path, monkeypatch):
    from pipeline.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", EXPERIMENT, root.as_uri())
    tracker.connect()
    with tracker.run("r"):
        tracker.log_text("hello", "note.txt")
    assert list(root.rglob("note.txt"))
    assert not (tmp_path / "file:").exists()


# ---------------------------------------------------------------- 5. the PostgreSQL lock


@pytest.mark.parametrize(
    "uri,locks",
    [
        ("postgresql+psycopg://u@127.0.0.1:{port}/db", True),  # the driver we pin
        ("postgresql://u@127.0.0.1:{port}/db", True),
        ("sqlite:///x.db", False),
        ("mysql+pymysql://u@127.0.0.1:{port}/db", False),
    ],
)
def test_a_driver_qualified_postgresql_uri_takes_the_creation_lock(uri, locks):
    """The lock is taken on a connection to the database: with nothing listening, trying
    to take it fails, which shows it was tried; other stores skip it."""
    import sqlalchemy

    from pipeline.tracking.postgres import creation_lock, is_postgres

    uri = uri.format(port=free_port())
    assert is_postgres(uri) is locks
    assert is_postgres("postgresql+psycopg2://u@h/db") and is_postgres("POSTGRES://u@h/db")
    if locks:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            with creation_lock(uri):
                pass
    else:
        with creation_lock(uri):
            pass


# ---------------------------------------------------------------- 6. 7. the report's words


def three_configurations(rng) -> tuple[pd.DataFrame, dict]:
    from tests.test_comparisons import simulated_search

    runs, preds = simulated_search(rng, 0.2)
    more, more_preds = simulated_search(rng, 0.1)
    more = more[more["label"] == "better"].assign(label="middle")
    preds[("d", "middle")] = more_preds[("d", "better")]
    return pd.concat([runs, more]), preds


@pytest.mark.parametrize(
    "adjust,name",
    [("holm", "Holm"), ("fdr_bh", "Benjamini-Hochberg (FDR)"), ("bonferroni", "Bonferroni")],
)
def test_the_adjustment_named_is_the_one_applied(adjust, name):
    from pipeline.reporting.comparisons import comparisons

    runs, preds = three_configurations(np.random.default_rng(5))
    found = comparisons(runs, preds, "val_accuracy", baseline="base", adjust=adjust)
    assert all(f"{name}-adjusted p=" in c.detail() for c in found)
    others = {"Holm", "Benjamini-Hochberg (FDR)", "Bonferroni"} - {name}
    assert not any(f"{o}-adjusted" in c.detail() for c in found for o in others)


def test_seeds_needed_is_never_the_seeds_already_run():
    from pipeline.reporting.comparisons import Comparison, compare_seeds

    # The two-level interval carries the validation set's noise; the seeds barely
    # disagree, so the seed-level power estimate asks for 2-3 seeds, although these 3 did
    # not settle it (a 90% interval wider than the margin).
    c = Comparison(
        data="d",
        a="a",
        b="b",
        metric="val_accuracy",
        seeds=3,
        examples=500,
        diff=0.012,
        ci95=(-0.01, 0.034),
        ci90=(-0.006, 0.03),
        p_value=0.3,
        seed_spread=0.002,
        margin=0.01,
        method="two-level bootstrap",
        sources="seeds and validation examples",
        p_adjusted=0.3,
    )
    c.decide()
    assert c.verdict == "underpowered"
    assert c.seeds_needed is not None and c.seeds_needed <= 3
    assert "more than 3 seeds would be needed" in c.sentence()
    assert "more than 3 seeds needed" in c.short()
    assert "about 3 seeds" not in c.sentence() and "about 2 seeds" not in c.sentence()
    wide = compare_seeds("d", "a", "b", "val_accuracy", np.asarray([0.05, -0.04, 0.01]), 0.005)
    wide.p_adjusted = 0.9
    wide.decide()
    assert wide.seeds_needed > 3 and f"about {wide.seeds_needed} seeds" in wide.sentence()


# ---------------------------------------------------------------- 8. reproduce a FAILED run


@pytest.mark.e2e
def test_reproduce_of_a_failed_run_says_there_is_nothing_to_compare(store, run_cli):
    from pipeline.search import run_search

    run_search(store.compose(*QUICK, "search.name=failed", "tuner.max_trials=1"))
    (trial,) = [r for r in store.runs() if r.data.tags["kind"] == "trial"]
    client = store.client()
    client.set_tag(trial.info.run_id, "interrupted", "true")
    client.set_tag(trial.info.run_id, "error", "interrupted: the process died mid-trial")
    client.set_terminated(trial.info.run_id, status="FAILED")
    result = run_cli("reproduce", trial.info.run_id, *store.overrides[:3])
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "ended FAILED: interrupted: the process died mid-trial" in lines[0]
    assert "no final metrics to compare" in lines[0]
    assert len([r for r in store.runs() if r.data.tags["kind"] == "reproduce"]) == 0
