"""Every trial run carries its whole configuration under the same dotted keys, so the
MLflow UI filters and plots across searches; summaries and reports still show only what
the tuner chose, for runs of either layout."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, compose_config
from pipeline.runtime.checks import validate_config
from pipeline.search.space import trial_settings
from pipeline.search.trial import trial_params
from pipeline.search.tuner import trial_run_name
from pipeline.tracking import TrialRecord, TrialRun


def params_of(*overrides: str, values: dict) -> tuple[dict, list[str]]:
    cfg = compose_config(["+experiment=quick", *overrides])
    model, train = trial_settings(cfg, values)
    return trial_params(cfg, TrialRecord(values, 3, "fp", "g", None), model, train)


def test_two_searches_log_the_same_keys_and_say_what_they_searched():
    a, searched_a = params_of(values={"units": 64, "learning_rate": 0.003, "pooling": "mean"})
    b, searched_b = params_of(
        "data=csv",
        "data.csv.path=/tmp/x.csv",
        values={"pooling": "attention", "attention_activation": "tanh", "tuner/epochs": 4},
    )
    core = {
        "model.units",
        "model.pooling",
        "model.variant",
        "train.learning_rate",
        "train.epochs",
        "train.seed",
        "data.name",
        "data.max_len",
    }
    assert core <= set(a) and core <= set(b)
    assert a["model.units"] == 64 and a["train.seed"] == 3 and a["model.variant"] == "mean"
    assert b["model.variant"] == "attn-tanh" and b["data.name"] == "csv"
    assert b["tuner/epochs"] == 4 and b["train.epochs"] == 4  # keras-tuner's own value kept
    assert searched_a == ["model.units", "train.learning_rate", "model.pooling"]
    assert searched_b == ["model.pooling", "model.attention_activation"]
    assert not any(k.startswith("data.synthetic") for k in b)  # only the active loader
    assert len(a) <= 100  # one MLflow log_batch


def run_with(params: dict, searched: tuple[str, ...] | None) -> TrialRun:
    return TrialRun("r", "n", "0", "FINISHED", 0, 1, params=params, searched=searched)


def test_hyperparameters_read_both_layouts():
    new = run_with(
        {
            "model.units": "64",
            "model.dropout": "0.1",
            "train.learning_rate": "0.003",
            "tuner/epochs": "4",
        },
        ("model.units", "train.learning_rate"),
    )
    assert new.hyperparameters == {"units": "64", "learning_rate": "0.003", "tuner/epochs": "4"}
    old = run_with({"units": "64", "pooling": "mean"}, None)  # logged before the change
    assert old.hyperparameters == {"units": "64", "pooling": "mean"}


def test_run_names_say_what_a_run_is():
    name = trial_run_name(6, "attn-tanh", 64, 0.003, 2)
    assert name == "t006 attn-tanh u64 lr3e-3 s2"
    assert trial_run_name(12, "mean", 8, 0.00042, None) == ("t012 mean u8 lr4.2e-4")


def test_registering_the_best_needs_a_logged_model():
    cfg = compose_config(["tracking.register_best=best", "tracking.log_model=false"])
    with pytest.raises(ConfigError, match="tracking.register_best"):
        validate_config(cfg)
