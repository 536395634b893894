"""Search lifecycle: crash and resume, Ctrl-C/SIGTERM, incomparable resumes, bad input.

Signals and kill -9 hit a real `python -m pipeline.search` process; what follows them
(the resume, the checks) runs in-process through `run_search(cfg)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter

import psutil
import pytest

from pipeline.errors import SearchError
from pipeline.search import run_search
from tests.conftest import BACKGROUND, PROJECT_ROOT, search_command_in_process, store_overrides
from tests.forked_cli import popen_python, run_python

pytestmark = pytest.mark.e2e

EPOCHS = 3
BASE = [
    "+experiment=quick",
    f"train.epochs={EPOCHS}",
    "train.early_stopping.enabled=false",
    "tracking.log_model=false",
    "tracking.log_datasets=false",
    "attention.enabled=false",
]


def runs_of(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("attention-search")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def start(
    tmp_path, *overrides: str, blocked_in_trial: int, new_session: bool = False
) -> subprocess.Popen:
    """The search CLI, its trials tiny; it stops mid-trial `blocked_in_trial` (after that
    trial's first logged epoch) and stays there: a barrier file the test never creates
    (tests/plugins/epoch_barrier.py), not long training, keeps it there."""
    env = {
        **os.environ,
        "EPOCH_BARRIER": str(tmp_path / "never"),
        "EPOCH_BARRIER_AFTER": str((blocked_in_trial - 1) * EPOCHS + 1),
    }
    return popen_python(
        [
            "-m",
            "pipeline.search",
            *BASE,
            "plugins=[tests.plugins.epoch_barrier]",
            *store_overrides(tmp_path),
            *overrides,
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=new_session,
    )


def run(tmp_path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_python(
        ["-m", "pipeline.search", *BASE, *store_overrides(tmp_path), *overrides],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running_trial_numbers(tmp_path) -> set[str]:
    """Read the store read-only with sqlite3: an MlflowClient here would race the CLI's
    own table creation."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            # RUNNING and past its first epoch (a logged loss): well inside its training.
            rows = conn.execute(
                "SELECT t.value FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid "
                "WHERE t.key = 'trial_number' AND r.status = 'RUNNING' AND EXISTS "
                "(SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'loss')"
            ).fetchall()
    except sqlite3.Error:  # tables not created yet
        return set()
    return {value for (value,) in rows}


def wait_for_running_trial(tmp_path, number: int, proc: subprocess.Popen, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if str(number) in running_trial_numbers(tmp_path):
            return
        time.sleep(0.5)
    raise TimeoutError(f"trial {number} never started")


def resume(store, *overrides: str):
    """The same search continued in-process (BASE, the store, then `overrides`)."""
    return run_search(store.compose(*BASE, *overrides))


def test_sigkill_mid_trial_then_resume_runs_each_trial_once(store, capsys):
    tmp_path = store.path
    proc = start(tmp_path, "search.name=crashy", "tuner.max_trials=2", blocked_in_trial=2)
    wait_for_running_trial(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = runs_of(tmp_path)
    assert any(r.info.status == "RUNNING" for r in left)  # the crash left runs open

    # A state file cut short (as a kill mid-write left them before writes were atomic):
    # the resume refuses in one line naming it, and changes nothing in the store.
    state = sorted((tmp_path / "tuner" / "crashy").glob("trial_*/trial.json"))[-1]
    whole = state.read_text()
    state.write_text(whole[: len(whole) // 2])
    with pytest.raises(SearchError, match=r"cannot resume 'crashy'.*trial\.json is unreadable"):
        resume(store, "search.name=crashy", "tuner.max_trials=2")
    assert [r.info.status for r in runs_of(tmp_path)] == [r.info.status for r in left]
    state.write_text(whole)

    resume(store, "search.name=crashy", "tuner.max_trials=2")
    printed = capsys.readouterr().out
    assert "resumed" in printed and "interrupted trial run(s) marked FAILED" in printed

    runs = runs_of(tmp_path)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    parents = [r for r in runs if r.data.tags["kind"] == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 2  # max_trials
    per_key = Counter(c.data.tags["config_hash"] for c in finished)
    assert set(per_key.values()) == {1}  # no trial logged twice
    interrupted = [c for c in children if c.data.tags.get("interrupted") == "true"]
    assert len(interrupted) == 1 and interrupted[0].info.status == "FAILED"
    # The interrupted trial was re-run once with the same hyperparameters.
    assert interrupted[0].data.tags["config_hash"] in per_key


def spool_worker(proc: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    """The search's artifact-upload worker (`python -m pipeline.tracking.spool`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "pipeline.tracking.spool" in child.cmdline():
                    return child
        time.sleep(0.02)
    raise TimeoutError("the search started no artifact worker")


PNG_END = b"IEND\xaeB`\x82"


def test_sigkill_mid_upload_then_resume_uploads_every_artifact_whole(store, capsys):
    """kill -9 of the search and its upload worker with a trial's artifacts still in the
    spool (the worker frozen before it could upload them) and one of them half-written in
    the store: the resume uploads them whole, and no run is left RUNNING."""
    from pipeline.diagnostics.renders import RENDERERS

    tmp_path = store.path
    args = ("search.name=spooled", "tuner.max_trials=2", "attention.enabled=true", BACKGROUND)
    proc = start(tmp_path, *args, blocked_in_trial=2, new_session=True)
    spool_worker(proc).suspend()  # started with the search; trial 1 ends seconds later
    wait_for_running_trial(tmp_path, 2, proc)
    spool = tmp_path / "tuner" / "spooled" / "spool" / "main"
    (job,) = sorted(p for p in spool.iterdir() if (p / "job.json").exists())
    first = next(r for r in runs_of(tmp_path) if r.data.tags.get("trial_number") == "1")
    assert first.info.status == "FINISHED" and first.info.run_id in job.name
    # What an upload cut short leaves: part of the heatmap's PNG in the store.
    json_src = job / "files" / "attention"
    (kind_json,) = json_src.glob("final_*.json")
    png_name = kind_json.name.replace(".json", ".png")
    store_dir = tmp_path / "artifacts" / first.info.run_id / "artifacts" / "attention"
    store_dir.mkdir(parents=True, exist_ok=True)
    whole = RENDERERS["attention_png"](json.loads(kind_json.read_text()))
    (store_dir / png_name).write_bytes(whole[: len(whole) // 2])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    resume(store, *args)
    printed = capsys.readouterr().out
    assert "job(s) a stopped process left" in printed
    assert not any(p.name[0] != "." for p in spool.iterdir())  # every job done
    runs = runs_of(tmp_path)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    finished = [r for r in runs if r.data.tags["kind"] == "trial" and r.info.status == "FINISHED"]
    assert len(finished) == 2
    for run in finished:
        folder = tmp_path / "artifacts" / run.info.run_id / "artifacts"
        for name in ("confusion_matrix.png", f"attention/{png_name}"):
            assert (folder / name).read_bytes().endswith(PNG_END), (run.info.run_id, name)
        assert (folder / "attention" / png_name.replace(".png", ".html")).stat().st_size > 0
    # The half-written one replaced by a whole drawing of the same panel (IHDR: its size).
    replaced = (store_dir / png_name).read_bytes()
    assert replaced.endswith(PNG_END) and replaced[16:24] == whole[16:24]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_marks_runs_killed_and_says_how_to_resume(store, sig, code):
    tmp_path = store.path
    proc = start(tmp_path, "search.name=stopped", "tuner.max_trials=3", blocked_in_trial=1)
    wait_for_running_trial(tmp_path, 1, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: interrupted") and "search.name=stopped" in lines[-1]
    assert "Traceback" not in stderr
    runs = runs_of(tmp_path)
    statuses = {r.data.tags["kind"]: r.info.status for r in runs}
    assert statuses == {"search": "KILLED", "trial": "KILLED"}

    resume(store, "search.name=stopped", "tuner.max_trials=1")
    finished = [
        r
        for r in runs_of(tmp_path)
        if r.data.tags["kind"] == "trial" and r.info.status == "FINISHED"
    ]
    assert len(finished) == 1


def test_resume_with_changed_space_refuses_unless_forced(store):
    resume(store, "search.name=fixed", "tuner.max_trials=1", "train.epochs=1")
    with pytest.raises(SearchError, match="not be comparable.*search.force_new=true"):
        resume(
            store,
            "search.name=fixed",
            "tuner.max_trials=1",
            "train.epochs=1",
            "search_space.units.values=[16]",
        )
    resume(
        store,
        "search.name=fixed",
        "tuner.max_trials=1",
        "train.epochs=1",
        "search_space.units.values=[16]",
        "search.force_new=true",
    )
    parents = [r for r in runs_of(store.path) if r.data.tags["kind"] == "search"]
    assert sorted(r.data.tags.get("superseded", "no") for r in parents) == ["no", "true"]
    assert all(r.info.status != "RUNNING" for r in runs_of(store.path))


def test_rerun_of_a_finished_search_adds_no_duplicate(store):
    for _ in range(2):
        resume(store, "search.name=again", "tuner.max_trials=2", "train.epochs=1")
    runs = runs_of(store.path)
    assert len([r for r in runs if r.data.tags["kind"] == "search"]) == 1
    assert len([r for r in runs if r.data.tags["kind"] == "trial"]) == 2


def search_in_process(tmp_path, *overrides: str) -> int:
    return search_command_in_process(*BASE, *store_overrides(tmp_path), *overrides)


BAD_INPUT = [
    (["search.resume=true", "search.name=nope"], "search.resume: no search named 'nope'"),
    (["search.resume=true"], "search.resume: no earlier search"),
    (["model.dropout=1.5"], "model.dropout"),
    (["search_space.pooling.values=[]"], "search_space.pooling.values"),
    (["search_space.pooling.values=[attention,lstm]"], "unknown pooling"),
    (["model.attention_activation=relu"], "model.attention_activation"),
    (
        ["data=csv", "data.csv.path={tmp}/reviews.csv", "data.csv.text_column=body"],
        "data.csv.label_column: column 'label'",
    ),
    (["tracking.artifact_root=/dev/null/artifacts"], "cannot write"),
    (["data.synthetic.n_classes=1"], "data.synthetic.n_classes"),
    (["data.dedupe=fuzzy"], "expected one of [none, exact, near]"),
    (["data.near_duplicates.threshold=0"], "data.near_duplicates.threshold"),
]


@pytest.mark.parametrize(("overrides", "needle"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_nothing_running(store, capsys, overrides, needle):
    """The one-line / exit-code contract, in-process (the CLI's own path below)."""
    tmp_path = store.path
    (tmp_path / "reviews.csv").write_text("body,category\ngood,pos\nbad,neg\n")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    code = search_in_process(tmp_path, *overrides)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert needle in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert all(r.info.status != "RUNNING" for r in runs_of(tmp_path))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.dedupe=fuzzy"], "expected one of [none, exact, near]"),  # Hydra's own compose
        (["tracking.artifact_root=/dev/null/artifacts"], "cannot write"),  # a Hydra callback
    ],
)
def test_the_search_command_keeps_the_contract_in_a_subprocess(store, overrides, needle):
    result = run(store.path, *overrides, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert needle in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_one_class_csv_is_rejected(store):
    tmp_path = store.path
    data = tmp_path / "one.csv"
    data.write_text("text,label\na b,x\nc d,x\ne f,x\n")
    result = run(tmp_path, "data=csv", f"data.csv.path={data}", timeout=120)
    assert result.returncode == 2 and "at least 2 classes" in result.stderr
    assert os.path.exists(data)
