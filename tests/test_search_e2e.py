"""End to end: real searches with tiny configs, checked through MLflow's own client.

Searches run in-process through `run_search(cfg)`; the CLI tests at the end drive
`python -m pipeline.search` in a subprocess for what only the command line does
(output, exit codes, start-up cost).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SearchError
from pipeline.search import run_search
from pipeline.tracking.mlflow_server import free_port
from tests.conftest import PROJECT_ROOT, assert_nothing_running

pytestmark = pytest.mark.e2e

TINY = [
    "+experiment=quick",
    "data.synthetic.n_examples=240",
    "tuner.max_trials=2",
    "tracking.log_datasets=true",
]


def test_search_logs_parent_and_nested_children(store, capsys, monkeypatch):
    outcome = run_search(
        store.compose(
            *TINY,
            "train.epochs=2",
            "train.early_stopping.enabled=false",
            "tuner.max_trials=4",  # the fewest configurations the importance views draw
            "search_space.pooling.values=[attention,mean]",
            "search.name=e2e",
            "attention.plot_every=1",
        )
    )
    printed = capsys.readouterr().out
    assert "[trial 4/4]" in printed and "epoch 2/2" in printed
    assert outcome.search_id == "e2e" and len(outcome.trials) == 4

    client, runs = store.client(), store.runs()
    parents = [r for r in runs if r.data.tags.get("kind") == "search"]
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "e2e"
    assert parent.info.run_id == outcome.parent_run_id
    assert_nothing_running(runs)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        for tag in ("search_id", "trial_id", "config_hash", "data_fingerprint", "seed"):
            assert child.data.tags[tag]
        params, searched = child.data.params, child.data.tags["searched"].split(",")
        if params["model.pooling"] == "attention":
            assert params["model.attention_activation"] in ("tanh", "none")
            assert "model.attention_activation" in searched
        else:  # an inactive hyperparameter is not among what the tuner chose
            assert "model.attention_activation" not in searched
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == [0, 1, 2]  # 2 epochs + final model
        assert {"val_accuracy", "val_macro_f1", "best_epoch"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"confusion_matrix.png", "model", "attention", "trial.json"} <= artifacts
        attention_files = {a.path for a in client.list_artifacts(child.info.run_id, "attention")}
        kind = "attention" if params["model.pooling"] == "attention" else "saliency"
        expected = {f"attention/final_{kind}.{ext}" for ext in ("png", "html", "json")}
        if kind == "attention":  # attention.plot_every=1: the panel after each epoch too
            expected |= {f"attention/epoch_{e:03d}_attention.png" for e in (1, 2)}
        assert expected <= attention_files
        panel = json.loads(
            open(
                client.download_artifacts(
                    child.info.run_id, f"attention/final_{kind}.json", str(store.path)
                )
            ).read()
        )
        assert panel["kind"] == kind and len(panel["examples"]) >= 3
        assert all(len(e["tokens"]) == len(e["weights"]) for e in panel["examples"])
        if kind == "attention":
            assert {
                "attention_entropy",
                "attention_on_padding",
                "attention_on_keys",
                "attention_top1_key_hit",
            } <= set(child.data.metrics)
            assert child.data.metrics["attention_on_padding"] == 0.0  # masked attention
        else:
            assert "attention_entropy" not in child.data.metrics
        assert child.inputs.dataset_inputs, "training/validation datasets logged"

    # Parent: config, best trial, test metrics, summary table.
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert "test_accuracy" in parent.data.metrics and "best_val_accuracy" in parent.data.metrics
    assert outcome.test_metrics["test_accuracy"] == parent.data.metrics["test_accuracy"]
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "config.yaml",
        "search_summary.csv",
        "vocab.txt",
        "environment.json",
        "comparison.png",
        "leaderboard.json",
        "search",
    } <= parent_artifacts
    assert parent.data.params["tuner.kind"] == "random"
    # Which knobs mattered: Optuna's evaluators and views, on the parent under search/.
    views = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert {"search/importance.json", "search/optimization_history.png"} <= views

    # The report shows what the finish weighed and drew, not a second estimate.
    import pipeline.reporting.importance as importance_module
    from pipeline.reporting.search_report import run_report

    def not_again(*args, **kwargs):
        raise AssertionError("the report estimated the knob importance again")

    explain = importance_module.explain_search
    monkeypatch.setattr(importance_module, "explain_search", not_again)
    report = run_report(store.tracker(), "e2e", out=store.path / "report")
    monkeypatch.undo()

    def logged(path: str) -> bytes:
        local = client.download_artifacts(parent.info.run_id, path, str(store.path / "dl"))
        return Path(local).read_bytes()

    importance = json.loads(logged("search/importance.json"))
    assert importance["configurations"] == 4
    if importance["evaluators"]:
        scores = next(iter(importance["evaluators"].values()))
        assert f"| {max(scores, key=scores.get)} |" in report.markdown
    else:  # tiny trials may all score the same: the finish's note is the report's
        assert f"Not estimated: {importance['note']}." in report.markdown
    drawn = (store.path / "report" / "search_optimization_history.png").read_bytes()
    assert drawn == logged("search/optimization_history.png")
    # Logged over fewer configurations than the store now holds (a search resumed since):
    # estimated again.
    client.log_dict(parent.info.run_id, {**importance, "configurations": 3},
                    "search/importance.json")  # fmt: skip
    from pipeline.reporting.evidence import knob_importance_of

    calls = []
    monkeypatch.setattr(importance_module, "explain_search",
                        lambda *a, **k: calls.append(a) or explain(*a, **k))  # fmt: skip
    tracker = store.tracker()
    search = tracker.find_search("e2e")
    records = tracker.trial_runs(search.run_id, status="FINISHED")
    knob_importance_of(tracker, search, "val_accuracy", records, store.path / "views")
    monkeypatch.undo()
    assert len(calls) == 1 and len(calls[0][0]) == 4

    # The Keras model inside the logged text model reloads with safe_mode and predicts.
    import mlflow.keras

    import pipeline.models.layers  # noqa: F401  (registers the custom layers)

    best = client.get_run(parent.data.tags["best_run_id"])
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.keras.load_model(f"runs:/{best.info.run_id}/model/artifacts/keras_model")
    probs = model.predict(np.array([[5, 6, 7, 0, 0]], dtype=np.int32), verbose=0)
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-5


def test_diverging_trial_fails_while_others_finish(store, capsys):
    run_search(
        store.compose(
            *TINY,
            "tuner=grid",
            "search_space.pooling.values=[mean]",
            "~search_space.attention_activation",
            "~search_space.dropout",
            "train.clipnorm=null",
            "~search_space.learning_rate",
            "+search_space.learning_rate={type: choice, values: [0.003, inf]}",
            "tracking.log_model=false",
        )
    )
    assert "FAILED: training diverged" in capsys.readouterr().out
    runs = store.runs()
    assert_nothing_running(runs)
    children = {
        r.data.params["train.learning_rate"]: r for r in runs if r.data.tags["kind"] == "trial"
    }
    assert children["inf"].info.status == "FAILED"
    assert "diverged" in children["inf"].data.tags["error"]
    assert children["0.003"].info.status == "FINISHED"


def test_consecutive_failures_stop_the_search_with_one_line(store):
    cfg = store.compose(
        *TINY,
        "tuner.max_trials=3",
        "tuner.max_consecutive_failed_trials=2",
        "train.clipnorm=null",
        "~search_space.learning_rate",
        "+search_space.learning_rate={type: fixed, value: inf}",
        "tracking.log_model=false",
    )
    with pytest.raises(SearchError, match="^search stopped: 2 consecutive trials failed"):
        run_search(cfg)
    runs = store.runs()
    assert_nothing_running(runs)
    statuses = sorted((r.data.tags["kind"], r.info.status) for r in runs)
    assert statuses == [("search", "FAILED"), ("trial", "FAILED"), ("trial", "FAILED")]


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_other_tuners_run_a_tiny_search(store, tuner, capsys):
    """Hyperband's brackets; a Bayesian search stopped by search.stop.patience (one trial
    that does not beat the best by more than the 36 validation examples' noise)."""
    extra = (
        ["tuner.max_epochs=2", "tuner.factor=2"]
        if tuner == "hyperband"
        else ["tuner.max_trials=5", "search.stop.patience=1"]
    )
    outcome = run_search(
        store.compose(
            *TINY,
            f"tuner={tuner}",
            "tuner.num_initial_points=1",
            "tuner.objective=val_macro_f1",
            "tracking.log_model=false",
            *extra,
        )
    )
    runs = store.runs()
    assert_nothing_running(runs)
    children = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert children and all(r.info.status == "FINISHED" for r in children)
    parent = next(r for r in runs if r.data.tags["kind"] == "search")
    assert parent.data.params["tuner.kind"] == tuner
    assert parent.data.tags["objective"] == "val_macro_f1"
    assert "best_val_macro_f1" in parent.data.metrics
    if tuner == "hyperband":
        assert any("tuner/epochs" in r.data.params for r in children)
    else:
        printed = capsys.readouterr().out
        assert "search stopped: 1 trials in a row did not beat the best" in printed
        assert 2 <= len(outcome.trials) < 5 and not outcome.exhausted and outcome.stopped
        # The tag is what the oracle said, handed over in its state (oracle.json).
        assert parent.data.tags["stopped"].startswith("search stopped: 1 trials in a row")
        assert parent.data.tags["stopped"] in printed


# ---------------------------------------------------------------- the command line


def test_cli_search_prints_progress_and_logs_its_resolved_config(store, run_cli):
    result = run_cli(
        "search",
        *TINY,
        *store.overrides,
        "tuner.max_trials=1",
        "tracking.log_model=false",
        "tracking.log_datasets=false",
        fresh=True,  # the search command's one test in an interpreter of its own
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[trial 1/1]" in result.stdout and "epoch 1/1" in result.stdout
    assert "open the UI: mlflow ui --backend-store-uri" in result.stdout
    assert "top 1 of 1 trials" in result.stdout
    # No TensorFlow start-up noise on a default (quiet) run.
    assert "cuda" not in result.stderr.lower() and "oneDNN" not in result.stderr
    client, runs = store.client(), store.runs()
    parent = next(r for r in runs if r.data.tags["kind"] == "search")
    assert parent.data.tags["command"].startswith("python -m pipeline.search +experiment=quick")
    import yaml

    path = client.download_artifacts(parent.info.run_id, "config.yaml", str(store.path))
    logged = yaml.safe_load(open(path))
    assert logged["tuner"]["max_trials"] == 1 and logged["data"]["synthetic"]["n_examples"] == 240
    space = json.loads(
        open(
            client.download_artifacts(parent.info.run_id, "search_space.json", str(store.path))
        ).read()
    )
    assert set(space) >= {"pooling", "attention_activation"}


HEAVY_CHECK = """
import atexit, runpy, sys
heavy = ("tensorflow", "keras_tuner", "mlflow", "keras")
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules)))
sys.argv = ["pipeline.search", *sys.argv[1:]]
runpy.run_module("pipeline.search", run_name="__main__")
"""


@pytest.mark.parametrize("flag", [["--help"], ["--cfg", "job"], ["model.units=0"]])
def test_help_cfg_and_bad_values_import_no_heavy_modules(flag, tmp_path):
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", HEAVY_CHECK, *flag],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "HEAVY=\n" in result.stdout or result.stdout.rstrip().endswith("HEAVY=")
    if flag == ["--help"]:
        assert result.returncode == 0
        assert (
            "experiment: attention_faithfulness, pooling_ablation, pretrained_vectors, "
            "pretrained_vectors_confirm, quick, "
            "seed_question, seed_recipe, units_sweep" in result.stdout
        )
        assert "cluster: local, workers" in result.stdout and "search_space:" in result.stdout
    if flag == ["--cfg", "job"]:
        assert "search_space:" in result.stdout and result.returncode == 0
    if flag == ["model.units=0"]:
        assert result.returncode == 2
        assert result.stderr.strip() == "error: model.units: must be > 0, got 0"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data=csv", "data.csv.path=/nonexistent/data.csv"], "data.csv.path: file not found"),
        (["tracking=server", "tracking.uri=http://127.0.0.1:{port}"], "cannot reach tracking"),
        (["tuner=annealing"], "tuner"),
        (["model.units=abc"], "model.units"),
    ],
)
def test_bad_input_gets_one_clear_line_and_nonzero_exit(store, run_cli, overrides, needle):
    overrides = [o.format(port=free_port()) for o in overrides]
    result = run_cli("search", *TINY, *store.overrides, *overrides, timeout=120)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_running(store.runs())
