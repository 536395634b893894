"""The pooling registry: one entry per variant, read by validation, model building,
labels, reports; and a variant added from outside `pipeline/` with no edit inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, compose_config
from pipeline.models.registry import (
    LABEL_LENGTH_SHOWN,
    POOLINGS,
    canonical_label,
    get_pooling,
    knob_options,
    label_knobs,
    labelled_settings,
    variant_label,
)
from pipeline.runtime.checks import validate_config
from tests.conftest import PROJECT_ROOT, assert_nothing_running

PLUGIN = "tests.plugins.gated_pooling"


def test_labels_differ_within_what_mlflow_plots_show():
    """MLflow's parallel-coordinates plot shows a categorical value's first 10 characters."""
    labels = [label for label, _ in labelled_settings()]
    shown = {label[:LABEL_LENGTH_SHOWN] for label in labels}
    assert len(shown) == len(labels)


def test_labels_of_older_runs_read_as_today():
    assert canonical_label("attention-tanh") == "attn-tanh"
    assert canonical_label("attention-none units=32") == "attn-none units=32"
    assert canonical_label("mean") == "mean" and canonical_label("attn-tanh") == "attn-tanh"


def test_registry_describes_every_built_in_variant():
    assert set(POOLINGS) == {"attention", "dot_attention", "mean", "max", "last", "classic"}
    classic, attention = get_pooling("classic"), get_pooling("attention")
    assert not classic.mask_aware and not classic.trims_padding and classic.attention_weights
    assert attention.mask_aware and attention.trims_padding and attention.attention_weights
    assert not get_pooling("mean").attention_weights  # heatmaps show saliency instead
    assert variant_label({"pooling": "attention", "attention_activation": "none"}) == "attn-none"
    assert variant_label({"pooling": "max", "attention_activation": "tanh"}) == "max"
    assert label_knobs() == {
        "pooling",
        "attention_activation",
        "attention_normalizer",
        "attention_heads",
    }
    assert knob_options()["attention_activation"] == ("tanh", "none")
    labels = [label for label, _ in labelled_settings()]
    assert labels[:2] == ["attn-tanh", "attn2-tanh"] and "spattn4-none" in labels
    assert [x for x in labels if x.startswith("dot")] == ["dot", "dot2", "dot4"]
    assert labels[-4:] == ["mean", "max", "last", "classic"] and len(labels) == 12 + 6 + 4
    with pytest.raises(ValueError, match="unknown pooling 'lstm'"):
        get_pooling("lstm")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.pooling=attn", "model.pooling"),
        ("model.attention_activation=relu", "model.attention_activation"),
        ("search_space.pooling.values=[attention,gru]", "search_space.pooling.values"),
        ("plugins=[no_such_plugin_module]", "plugins"),
    ],
)
def test_config_check_reads_the_registry(override, key):
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config([override]))
    assert str(err.value).startswith(key)


def test_a_variant_registered_outside_pipeline_runs_a_search_and_gets_a_report_row(
    store, registry_restored
):
    """The proof the registry is the one place: `gated` lives in tests/plugins only."""
    from pipeline.reporting.search_report import run_report
    from pipeline.search import run_search

    sources = "".join(p.read_text() for p in (PROJECT_ROOT / "pipeline").rglob("*.py"))
    assert "gated" not in sources.lower()
    cfg = store.compose(
        "+experiment=quick",
        f"plugins=[{PLUGIN}]",
        "search_space=pooling",
        "search_space.pooling.values=[gated,mean]",
        "~search_space.attention_activation",
        "tuner=grid",
        "search.seeds=[0,1]",
        "search.name=plugin",
        "tracking.log_model=false",
        "tracking.log_datasets=false",
    )
    outcome = run_search(cfg)
    assert set(outcome.trials["variant"]) == {"gated", "mean"}
    client, runs = store.client(), store.runs()
    assert_nothing_running(runs)
    gated = [r for r in runs if r.data.tags.get("variant") == "gated"]
    assert len(gated) == 2 and all(r.info.status == "FINISHED" for r in gated)
    for run in gated:
        files = {a.path for a in client.list_artifacts(run.info.run_id, "attention")}
        assert "attention/final_attention.png" in files  # weights, not saliency
        assert run.data.metrics["attention_on_padding"] == pytest.approx(0.0, abs=1e-6)
        assert 0 < run.data.metrics["attention_entropy"] <= 1
    mean = next(r for r in runs if r.data.tags.get("variant") == "mean")
    files = {a.path for a in client.list_artifacts(mean.info.run_id, "attention")}
    assert "attention/final_saliency.png" in files

    report = run_report(store.tracker(), "plugin", out=Path(store.path) / "report")
    assert set(report.leaderboard["configuration"]) == {"gated", "mean"}
    assert list(report.leaderboard["seeds"]) == [2, 2]
    assert "| gated |" in report.markdown or "| mean |" in report.markdown
