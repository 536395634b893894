"""The text-in model (pipeline/serving): what a quick search registers takes raw text in
a fresh interpreter, behind a real `mlflow models serve`, and in `pipeline.predict`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BACKGROUND, PROJECT_ROOT, Store

pytestmark = pytest.mark.e2e

MODEL = "served"


@pytest.fixture(scope="module")
def served(tmp_path_factory, store_template):
    """One quick attention search with its best model registered as `served`."""
    from pipeline.search.run import run_search

    path = tmp_path_factory.mktemp("serving")
    shutil.copy(store_template, path / "mlflow.db")
    store = Store(path)
    cfg = store.compose(
        "+experiment=quick",
        "attention.enabled=false",
        "search.name=serving",
        "tuner.max_trials=1",
        "search_space.pooling.values=[attention]",
        f"tracking.register_best={MODEL}",
        "serving.max_rows=1000",
        "serving.max_chars=500",
        "serving.max_explain_rows=3",
        BACKGROUND,  # as a search does by default: the model reaches the store by the spool
    )
    run_search(cfg)
    return store, cfg


def post(base: str, payload, params: dict | None = None) -> tuple[int, dict]:
    body = dict(payload)
    if params:
        body["params"] = params
    request = urllib.request.Request(
        f"{base}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_raw_text_predictions_equal_the_tuners_validation_predictions(served):
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.serving.text_model import load_text_model
    from pipeline.tracking.store import Tracker

    store, cfg = served
    tracker = Tracker.from_config(cfg.tracking)
    tracker.connect()
    best = tracker.find_search("serving").best_run_id
    logged = tracker.read_predictions(best)
    data = prepare(typed_data(cfg.data))
    assert np.array_equal(logged.index, data.indices["val"])
    model = load_text_model(f"models:/{MODEL}/latest", store.uri)
    answer = model.predict(pd.DataFrame({"text": data.texts["val"]}))
    columns = [f"p_{c}" for c in data.class_names]
    np.testing.assert_allclose(answer[columns].to_numpy(), logged.probs, atol=1e-6, rtol=0)
    expected = [data.class_names[i] for i in logged.probs.argmax(axis=1)]
    assert answer["label"].tolist() == expected


def test_a_fresh_interpreter_loads_the_model_from_the_store_with_its_own_code(served, tmp_path):
    store, _ = served
    script = textwrap.dedent(
        f"""
        import sys
        assert "pipeline" not in sys.modules
        import mlflow.pyfunc
        model = mlflow.pyfunc.load_model("models:/{MODEL}/latest")
        out = model.predict(["k0_1 k0_2 w3 w4", "   "])
        print(out["label"].tolist(), out["empty"].tolist())
        print(sys.modules["pipeline"].__file__)
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    labels, source = result.stdout.strip().splitlines()[-2:]
    assert "[False, True]" in labels
    assert "/model/code/pipeline/" in source  # shipped with the model, not this checkout


def test_the_served_model_answers_raw_text_explains_and_refuses_bad_requests(served, tmp_path):
    from pipeline.serving.batch import score
    from pipeline.serving.model_server import model_server
    from pipeline.serving.text_model import load_text_model

    store, _ = served
    texts = ["k0_1 k0_2 w3 w4", "w9 k1_1 k1_2 k1_3", "   ", " ".join(["w5"] * 100)]
    direct = score(load_text_model(f"models:/{MODEL}/latest", store.uri), texts)
    with model_server(f"models:/{MODEL}/latest", store.uri, tmp_path, tmp_path / "s.log") as base:
        status, body = post(base, {"dataframe_records": [{"text": t} for t in texts]})
        assert status == 200, body
        rows = pd.DataFrame(body["predictions"])
        assert rows["label"].tolist() == direct["label"].tolist()
        np.testing.assert_allclose(rows["p_class_0"], direct["p_class_0"], atol=1e-6)
        assert rows["empty"].tolist() == [False, False, True, False]
        assert rows["truncated"].tolist() == [False, False, False, True]

        status, body = post(base, {"inputs": texts[:2]}, params={"explain": True})
        assert status == 200, body
        for row in body["predictions"]:
            assert row["explanation"] == "attention"
            assert len(row["weights"]) == len(row["tokens"]) == 4
            assert abs(sum(row["weights"]) - 1) < 1e-4

        for bad, needle in [
            ({"dataframe_records": [{"body": "no text column"}]}, "text"),
            ({"dataframe_records": [{"text": 5}]}, ""),
            ({"inputs": []}, ""),
        ]:
            status, body = post(base, bad)
            assert status == 400, (bad, body)
            assert needle in body.get("message", "")


def test_batch_scoring_of_a_csv_and_a_folder_and_its_bad_inputs(served, tmp_path, capsys):
    from pipeline.predict import main

    store, _ = served
    uri = f"tracking.uri={store.uri}"
    csv = tmp_path / "in.csv"
    csv.write_text("id,body\n7,k0_1 k0_2 w3\n8,k1_1 k1_2 w4\n")
    out = tmp_path / "preds.csv"
    assert main([f"models:/{MODEL}/latest", "--input", str(csv), "--text-column", "body",
                 "--out", str(out), uri]) == 0  # fmt: skip
    preds = pd.read_csv(out)
    assert preds["id"].tolist() == [7, 8] and {"label", "p_class_0", "truncated"} <= set(preds)
    folder = tmp_path / "docs"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "one.txt").write_text("k2_1 k2_2 w1")
    (folder / "two.txt").write_text("w1 w2")
    assert main([f"models:/{MODEL}/latest", "--input", str(folder), "--out", str(out), uri]) == 0
    assert pd.read_csv(out)["file"].tolist() == ["a/one.txt", "two.txt"]
    capsys.readouterr()
    for args, needle in [
        (["models:/nope/latest", "--input", str(csv), "--text-column", "body"], "nope"),
        ([f"models:/{MODEL}/latest", "--input", str(csv)], "no column 'text'"),
        ([f"models:/{MODEL}/latest", "--input", str(tmp_path / "missing.csv")], "not found"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, uri])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0 and "Traceback" not in err


def test_a_request_beyond_the_model_s_bounds_is_refused_in_one_line(served):
    from pipeline.serving.batch import score
    from pipeline.serving.text_model import TextInputError, load_text_model

    store, _ = served
    model = load_text_model(f"models:/{MODEL}/latest", store.uri)
    for texts, params, needle in [
        (["w1"] * 1001, None, "1001 texts in one request; at most 1000"),
        (["w1"] * 4, {"explain": True}, "4 texts with explain=true in one request; at most 3"),
        (["w1", "w2 " * 200], None, "text 1 has 600 characters; at most 500"),
    ]:
        with pytest.raises(TextInputError, match=needle):
            model.predict(texts, params=params)
    explained = score(model, ["k0_1 w2"] * 7, explain=True)  # batch scoring sends chunks of 3
    assert len(explained) == 7 and explained["explanation"].eq("attention").all()


def test_defining_the_text_model_prints_no_mlflow_warning():
    """MLflow checks a PythonModel's `predict` hints when the class is defined, inside its
    own `catch_warnings`, and without a hint it warned "Add type hints" on every search."""
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import pipeline.serving.text_model"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "type hint" not in result.stderr.lower(), result.stderr
