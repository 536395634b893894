"""The users' own paths, as the README tells them, each a few real commands end to end:
a newcomer (search, report, reproduce, predict, serve; a second terminal on the same
search), a CSV of one's own, and generated names started in one second. Tiny data; the
default config unless a journey says otherwise.
Two journeys live beside what they share: the teammate's (an auth server, a READ user's
report) in `test_team.py::test_basic_auth_server_signs_searches_in_a_read_user...`, the
plugin author's (a plugin's pooling searched, its model loaded and served outside the
checkout) in `test_plugin_config.py::test_a_quick_search_on_a_plugin_loader...`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, start_search_cli, store_overrides

pytestmark = [pytest.mark.e2e, pytest.mark.journey]

EXPERIMENT = "attention-search"
TINY = ["data.synthetic.n_examples=400", "data.max_len=30", "train.epochs=2"]


def ok(result) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def trial_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("kind") == "trial"]


def best_run_id(uri: str, search: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    (parent,) = client.search_runs(
        [exp.experiment_id], f"tags.search_id = '{search}' and tags.kind = 'search'"
    )
    return parent.data.tags["best_run_id"]


def post_texts(base: str, texts: list[str]) -> list[dict]:
    request = urllib.request.Request(
        f"{base}/invocations",
        data=json.dumps({"inputs": texts}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())["predictions"]


def test_newcomer_search_report_reproduce_predict_and_serve(tmp_path, run_cli):
    """README "Two commands" and "Use the best model", on the default config (tiny data);
    while the search trains, a second terminal starts the same search and is refused."""
    from pipeline.serving.model_server import model_server

    store = store_overrides(tmp_path)
    uri = store[0].split("=", 1)[1]
    command = [*TINY, "tuner.max_trials=2", "tuner.pruning_startup_trials=1", "search.name=first"]
    first = start_search_cli(*command, *store)
    try:
        assert first.stdout is not None
        for line in first.stdout:  # wait until it trains
            if line.startswith("[trial 1/"):
                break
        started = time.monotonic()
        second = run_cli("search", *command, *store)
        took = time.monotonic() - started
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        line = second.stderr.strip()
        assert (
            line.count("\n") == 0
            and f"'first' is running in another process (pid {first.pid}" in line
        )
        assert took < 2 + 3, took  # + the forked interpreter's start under a busy suite
        rest, _ = first.communicate(timeout=300)
        assert first.returncode == 0, rest[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    runs = trial_runs(uri)  # the second terminal added none
    assert len(runs) == 2 and len({r.data.tags["trial_id"] for r in runs}) == 2
    assert all(r.info.status == "FINISHED" for r in runs)

    report = ok(run_cli("report", "first", "--out", str(tmp_path / "report"), *store[:2]))
    assert "logged on parent run" in report.stdout
    assert (tmp_path / "report" / "report.md").is_file()

    best = best_run_id(uri, "first")
    again = ok(run_cli("reproduce", best, *store[:2]))
    assert "match:" in again.stdout

    texts = tmp_path / "tweets.csv"
    pd.DataFrame({"text": ["k0_1 k0_2 w3", "w9 k1_1 k1_2"], "label": ["a", "b"]}).to_csv(
        texts, index=False
    )
    out = tmp_path / "preds.csv"
    predict = ["predict", f"runs:/{best}/model", "--input", str(texts), "--out", str(out)]
    ok(run_cli(*predict, *store[:2]))
    scored = pd.read_csv(out)
    assert scored["label"].tolist() == ["a", "b"]  # the input's own column, untouched
    assert scored["pred_label"].str.startswith("class_").all()
    assert not list(tmp_path.glob(".preds.csv.*"))  # no temporary file left

    with model_server(f"runs:/{best}/model", uri, tmp_path) as base:
        rows = post_texts(base, ["k0_1 k0_2 w3", "w9 k1_1 k1_2"])
    assert [r["label"] for r in rows] == scored["pred_label"].tolist()


GRAB = """
import sys, time
from pipeline.search import ownership
print(ownership.hold_new_name(sys.argv[1], "search-20261206-120000", lambda n: False), flush=True)
time.sleep(3)
"""


def test_generated_names_started_in_one_second_never_collide(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GRAB, str(tmp_path)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(names) == [
        "search-20261206-120000",
        "search-20261206-120000-2",
        "search-20261206-120000-3",
    ]
