"""The MLflow UI, in headless Chromium, as a researcher uses it to compare searches.

Two tiny real searches in one store (in-process), then `mlflow server` over it, then
Playwright driving Debian's chromium. The runs table filtered by a dotted param shows the
runs of both searches; the compare page of a search's children plots the searched params
against the validation objective without any selection by hand; a child shows system
metrics; the registered best model is on the Models page; a heatmap PNG renders.
Screenshots are kept in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import urllib.request

import pytest

from pipeline.tracking.mlflow_server import mlflow_server
from pipeline.tracking.ui import UiTour, chromium_path
from tests.conftest import PROJECT_ROOT
from tests.forked_cli import start_server_forked

pytestmark = pytest.mark.e2e

TINY = [
    "+experiment=quick",
    "train.epochs=3",
    "tracking.system_metrics_s=1",  # trials last a few seconds here
]


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (`make browser` installs it as root)"
)
def test_the_ui_compares_runs_across_searches(store):
    from pipeline.search import run_search

    run_search(
        store.compose(
            "+experiment=quick",
            "tuner.max_trials=1",
            "search.name=default-search",
            "tracking.log_model=false",
        )
    )
    run_search(
        store.compose(
            *TINY,
            "tuner=grid",
            "search_space.pooling.values=[attention,classic]",
            "search.name=pooling-ablation",
            "tracking.register_best=attention-best",
        )
    )
    runs = store.runs()
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    ablation = [r for r in children if r.data.tags["search_id"] == "pooling-ablation"]
    assert {r.data.tags["search_id"] for r in children} == {"default-search", "pooling-ablation"}
    # Every child carries its whole configuration under the same dotted keys.
    for run in children:
        assert {"model.units", "model.pooling", "train.learning_rate", "data.name"} <= set(
            run.data.params
        )
        assert run.data.tags["searched"]
    matching = [r for r in runs if r.data.params.get("model.units") == "8"]
    assert len(matching) == len(children)  # every trial; parents log the unsearched default
    with_system = [r for r in ablation if "system/cpu_utilization_percentage" in r.data.metrics]
    assert with_system, "no trial sampled system metrics"
    parent = next(r for r in runs if r.info.run_name == "pooling-ablation")
    assert parent.data.tags["registered_model"] == "attention-best/1"
    artifacts = {a.path for a in store.client().list_artifacts(parent.info.run_id)}
    assert "leaderboard.json" in artifacts  # mlflow.log_table: a table in the UI
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model("models:/attention-best/latest")  # raw text in
    assert model.unwrap_python_model().keras_model.output_shape[-1] == 3
    answer = model.predict(["k0_1 k0_2 w1"])
    assert list(answer.columns[:4]) == ["label", "p_class_0", "p_class_1", "p_class_2"]
    heatmap = "attention/final_attention.png"
    exp_id = children[0].info.experiment_id

    with mlflow_server(store.uri, store.path, start=start_server_forked) as base:
        with urllib.request.urlopen(
            f"{base}/get-artifact?path={heatmap}&run_uuid={ablation[0].info.run_id}", timeout=30
        ) as resp:
            png = resp.read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
        with UiTour(base, exp_id, PROJECT_ROOT / "test-artifacts") as tour:
            shots = [
                tour.runs_table("pooling-ablation", [r.info.run_name for r in ablation]),
                tour.filtered(
                    "params.`model.units` = '8'",
                    ["default-search", "pooling-ablation"],
                    matching=len(matching) + 2,  # the UI counts their parents too
                ),
                tour.compare(
                    [r.info.run_id for r in ablation],
                    ["model.attention_activation", "val_accuracy"],
                ),
                tour.system_metrics(with_system[0].info.run_id),
                tour.registered_model("attention-best"),
                tour.artifact_image(ablation[0].info.run_id, heatmap),
            ]
    for path in shots:
        assert path.stat().st_size > 10_000
