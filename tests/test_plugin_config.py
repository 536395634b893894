"""Plugins that bring their own config sections (`data.<loader>`, `model.<variant>`):
typed and defaulted like `conf/`, absent from configs that do not name the plugin, and
enough for a search, its report and a reproduction, with no edit inside `pipeline/`."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.config import compose_config
from tests.conftest import PROJECT_ROOT, assert_nothing_running

PLUGIN = "tests.plugins.jsonl_data"


@pytest.fixture
def reviews(tmp_path):
    """A JSONL file: the label is decided by which of two word sets a text draws from."""
    import numpy as np

    rng = np.random.default_rng(0)
    good, bad, filler = ["great", "lovely", "fine"], ["awful", "late", "rude"], list("abcdefgh")
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as f:
        for i in range(300):
            label = ["pos", "neg"][i % 2]
            words = list(rng.choice(filler, size=int(rng.integers(4, 12))))
            words[int(rng.integers(len(words)))] = str(rng.choice(good if label == "pos" else bad))
            f.write(json.dumps({"body": " ".join(words), "stars": label}) + "\n")
        f.write(json.dumps({"body": "ok", "stars": "pos"}) + "\n")  # shorter than min_chars
    return path


def test_plugin_sections_are_typed_defaulted_and_only_where_named(reviews, registry_restored):
    from pipeline.config import ConfigError
    from pipeline.runtime.checks import validate_config

    sources = "\n".join(p.read_text() for p in (PROJECT_ROOT / "pipeline").rglob("*.py"))
    assert "review_lines" not in sources and "scaled_mean" not in sources
    cfg = compose_config(
        [f"plugins=[{PLUGIN}]", "data.loader=review_lines", f"data.review_lines.path={reviews}"]
    )
    assert dict(cfg.data.review_lines) == {
        "path": str(reviews),
        "text_key": "text",
        "label_key": "label",
        "min_chars": 1,
    }
    assert cfg.model.scaled_mean.scale == 1.0  # the dataclass's default
    validate_config(cfg)
    with pytest.raises(Exception, match="min_chars"):  # typed: an int, like any conf/ key
        compose_config([f"plugins=[{PLUGIN}]", "data.review_lines.min_chars=many"])
    plain = compose_config([])  # the same process, without the plugin: no trace of it
    assert "review_lines" not in plain.data and "scaled_mean" not in plain.model
    with pytest.raises(Exception, match="review_lines"):  # nor does the key exist without it
        compose_config(["data.review_lines.path=x"])
    with pytest.raises(ConfigError, match="^plugins: cannot import 'no_such_plugin'"):
        compose_config(["plugins=[no_such_plugin]", "data.review_lines.path=x"])


def test_a_quick_search_on_a_plugin_loader_and_pooling_with_their_own_keys(
    store, reviews, registry_restored
):
    from pipeline.reporting.search_report import run_report
    from pipeline.search import run_search
    from pipeline.search.reproduction import reproduce_run

    overrides = [
        "+experiment=quick",
        f"plugins=[{PLUGIN}]",
        "data.loader=review_lines",
        "data.name=reviews",
        f"data.review_lines.path={reviews}",
        "data.review_lines.text_key=body",
        "data.review_lines.label_key=stars",
        "data.review_lines.min_chars=3",
        "search_space=pooling",
        "~search_space.pooling",
        "~search_space.attention_activation",
        "model.pooling=scaled_mean",
        "+search_space.scaled_mean.scale={type: choice, values: [0.5, 2.0]}",
        "tuner=grid",
        "search.name=jsonl",
        "tracking.log_datasets=false",
    ]
    outcome = run_search(store.compose(*overrides))
    runs = store.runs()
    assert_nothing_running(runs)
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["model.scaled_mean.scale"] for r in trials} == {"0.5", "2.0"}
    assert {r.data.tags.get("variant") for r in trials} == {"scaled_mean"}
    parent = next(r for r in runs if r.data.tags.get("kind") == "search")
    assert parent.data.params["data.review_lines.text_key"] == "body"
    assert len(outcome.trials) == 2

    report = run_report(store.tracker(), "jsonl", out=store.path / "report")
    assert "reviews" in report.markdown  # the data set's own name, not the loader's

    reproduced = reproduce_run(store.compose(), trials[0].info.run_id)
    assert reproduced.matches, reproduced

    # The plugin author's journey ends with the model served from outside the checkout:
    # `mlflow models serve` loads it in a fresh interpreter there (`tests` is no installed
    # package), so the plugin's module can only come from the model's own code/.
    from pipeline.serving.model_server import model_server
    from tests.test_journeys import post_texts

    outside = store.path / "elsewhere"
    outside.mkdir()
    assert "PYTHONPATH" not in os.environ
    model = f"runs:/{trials[0].info.run_id}/model"
    with model_server(model, store.uri, outside, outside / "serve.log") as base:
        assert post_texts(base, ["a great long review"])[0]["label"] in {"pos", "neg"}
    meta = json.loads(next(store.path.rglob("preprocessing.json")).read_text())
    assert meta["plugins"] == [PLUGIN]
