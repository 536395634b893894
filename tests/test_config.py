"""Composing the real conf/ with overrides, and validation of bad values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from pipeline.config import ConfigError, compose_config
from pipeline.models.registry import POOLINGS, knob_options
from pipeline.runtime.checks import validate_config as validate


def test_default_config_composes_and_validates():
    cfg = compose_config()
    validate(cfg)
    assert cfg.data.loader == "synthetic"
    assert cfg.tracking.uri.startswith("sqlite:///mlruns/")
    pooling = cfg.search_space.pooling["values"]
    assert set(pooling) == set(POOLINGS)  # the default space searches every variant
    activations = set(cfg.search_space.attention_activation["values"])
    assert activations == set(knob_options()["attention_activation"])


def test_experiment_preset_and_group_overrides_apply():
    cfg = compose_config(["+experiment=quick", "tuner=hyperband", "data=airline_tweets"])
    assert cfg.tuner.kind == "hyperband" and cfg.tuner.max_trials == 3
    assert cfg.data.csv.label_column == "airline_sentiment"
    assert cfg.data.csv.path.endswith("shared/data/airline_tweets.csv")
    assert cfg.train.epochs == 1
    assert cfg.train.class_weight == "balanced"  # imbalanced airline data
    assert compose_config().train.class_weight == "none"
    assert (
        compose_config(["data=airline_tweets", "train.class_weight=none"]).train.class_weight
        == "none"
    )


@pytest.mark.parametrize(
    "override",
    [
        "model.units=abc",
        "train.epochs=1.5",
        "model.nonexistent=3",
        "tuner.max_trials=x",
        # enumerations and search-space specs are typed in the schema
        "tuner.objective=auc",
        "tuner.kind=annealing",
        "train.class_weight=some",
    ],
)
def test_wrong_type_or_unknown_key_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config([override])


def test_unknown_group_option_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="tuner"):
        compose_config(["tuner=simulated_annealing"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.units=0", "model.units"),
        ("model.dropout=1.5", "model.dropout"),
        ("tuner.max_trials=0", "tuner.max_trials"),
        ("data.max_len=0", "data.max_len"),
        ("model.pooling=attn", "model.pooling"),
        ("model.attention_activation=relu", "model.attention_activation"),
        ("search_space.pooling.values=[]", "search_space.pooling.values"),
        ("search_space.pooling.values=[attention,gru]", "search_space.pooling.values"),
        ("+search_space.colour={type:choice,values:[red]}", "search_space.colour"),
        ("search_space.learning_rate.min=0", "search_space.learning_rate.min"),
        ("+search_space.units.vals=[1]", "search_space.units"),
        ("search_space.units.type=range", "search_space.units.type"),
        ("search_space.learning_rate.sampling=cubic", "search_space.learning_rate.sampling"),
        ("+search_space.units.min=abc", "search_space.units.min"),
        ("+search_space.pooling.when={colour: [8]}", "search_space.pooling.when"),
    ],
)
def test_out_of_range_values_fail_validation_naming_the_key(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(key)


def test_a_dimension_can_be_added_and_narrowed_from_the_command_line():
    cfg = compose_config(
        ["+search_space.bidirectional={type: boolean}", "search_space.units.values=[8]"]
    )
    validate(cfg)
    assert cfg.search_space.bidirectional["type"] == "boolean"
    assert list(cfg.search_space.units["values"]) == [8]


def test_schema_holds_no_defaults_and_yaml_sets_every_value():
    """Defaults live in conf/ only: every schema field is MISSING (or None for sections
    and knobs one option uses), and the composed config leaves nothing missing."""
    import dataclasses
    import typing

    from omegaconf import MISSING, OmegaConf

    from pipeline.config import Config
    from pipeline.config.schema import HyperParamSpec

    def fields(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            inner = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if a]
            for kind in inner:
                if dataclasses.is_dataclass(kind) and kind is not HyperParamSpec:
                    yield from fields(kind)
            yield f"{cls.__name__}.{f.name}", f.default

    checked = list(fields(Config))
    assert len(checked) > 80  # every section was walked
    assert [n for n, d in checked if d not in (dataclasses.MISSING, MISSING, None)] == []
    for overrides in (
        [],
        ["tuner=bayesian", "data=csv", "data.csv.path=x.csv"],
        ["tuner=hyperband", "cluster=workers", "data=text_dir", "data.text_dir.root=x"],
    ):
        assert OmegaConf.missing_keys(compose_config(overrides)) == set()


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["data.csv.path=x.csv"], "error: data.csv.path: data.csv is not part of this config "
                                  "(data is synthetic); choose it first (data=csv)"),
        (["data=csv", "data.synthetic.seed=3"], "error: data.synthetic.seed: data.synthetic is "
         "not part of this config (data is csv); choose it first (data=synthetic)"),
    ],
)  # fmt: skip
def test_a_key_of_a_section_the_chosen_group_leaves_out_is_one_line(overrides, line, capsys):
    from pipeline.runtime.cli import composed_or_fail

    with pytest.raises(SystemExit) as exit_:
        composed_or_fail(overrides)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == line
