"""YAML search space -> keras-tuner hyperparameters -> a compiled model.

Dimensions are model.* or train.* knobs. Conditional dimensions (`when`) are
declared inside `hp.conditional_scope`, so keras-tuner only samples them when
their parent has one of the listed values, and `active_values` leaves them out
otherwise (they are never logged as if they had been used). `trial_settings` and
`build_trial_model` are the one way a trial's values become settings and a model:
the tuner, the test-set evaluation, reproduce and the benchmarks all use them.
"""

from __future__ import annotations

from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline.config import HPType, search_space_dims, to_plain

HYPERBAND_EPOCHS = "tuner/epochs"


def declare(hp: kt.HyperParameters, name: str, spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == HPType.choice:
        return hp.Choice(name, list(spec["values"]))
    if kind == HPType.int:
        return hp.Int(
            name,
            int(spec["min"]),
            int(spec["max"]),
            step=int(spec.get("step") or 1),
            sampling=spec.get("sampling", "linear"),
        )
    if kind == HPType.float:
        return hp.Float(
            name,
            float(spec["min"]),
            float(spec["max"]),
            step=spec.get("step"),
            sampling=spec.get("sampling", "linear"),
        )
    if kind == HPType.boolean:
        return hp.Boolean(name)
    if kind == HPType.fixed:
        return hp.Fixed(name, spec["value"])
    raise ValueError(f"search_space.{name}.type: unknown type {kind!r}")


def declare_space(hp: kt.HyperParameters, space: dict[str, dict[str, Any]]) -> None:
    """Unconditional dimensions first, so every parent exists before its children."""
    ordered = sorted(space.items(), key=lambda item: bool(item[1].get("when")))
    for name, spec in ordered:
        when = spec.get("when") or {}
        if not when:
            declare(hp, name, spec)
            continue
        # Nested scopes: active only when every listed parent matches.
        scopes = [hp.conditional_scope(parent, list(values)) for parent, values in when.items()]
        for scope in scopes:
            scope.__enter__()
        try:
            declare(hp, name, spec)
        finally:
            for scope in reversed(scopes):
                scope.__exit__(None, None, None)


def active_values(hp: kt.HyperParameters) -> dict[str, Any]:
    """The hyperparameters that this trial really used (inactive conditionals dropped).

    Hyperband's own `tuner/*` values (epochs, bracket, round) are set by its oracle
    outside the declared space and always count.
    """
    return {
        name: value
        for name, value in hp.values.items()
        if name.startswith("tuner/") or hp.is_active(name)
    }


def param_key(cfg: DictConfig, name: str) -> str | None:
    """The dotted config key a searched knob sets (`units` -> `model.units`); None for
    keras-tuner's own `tuner/*` values."""
    if name.startswith("tuner/"):
        return None
    if name in cfg.model:
        return f"model.{name}"
    if name in cfg.train:
        return f"train.{name}"
    return None


def trial_settings(cfg: DictConfig, values: dict[str, Any]) -> tuple[dict, dict]:
    """(model settings, train settings): the config with the trial's values applied."""
    model, train = to_plain(cfg.model), to_plain(cfg.train)
    for name, value in values.items():
        if name == HYPERBAND_EPOCHS:
            train["epochs"] = int(value)
        elif name in model:
            model[name] = value
        elif name in train:
            train[name] = value
    return model, train


def build_trial_model(
    model_settings: dict[str, Any], train: dict[str, Any], vocab_size: int, n_classes: int
):
    """The compiled classifier of one trial's settings."""
    from pipeline.models.build import build_model

    return build_model(
        model_settings,
        vocab_size,
        n_classes,
        learning_rate=train["learning_rate"],
        clipnorm=train["clipnorm"],
        steps_per_execution=train["steps_per_execution"],
    )


class SearchSpaceHyperModel(kt.HyperModel):
    """Builds the classifier from the composed config plus a trial's hyperparameters."""

    def __init__(self, cfg: DictConfig, vocab_size: int, n_classes: int):
        super().__init__(name="attention_search")
        self.cfg = cfg
        self.space = search_space_dims(cfg.search_space)
        self.vocab_size = vocab_size
        self.n_classes = n_classes

    def build(self, hp: kt.HyperParameters):
        declare_space(hp, self.space)
        model, train = trial_settings(self.cfg, active_values(hp))
        return build_trial_model(model, train, self.vocab_size, self.n_classes)
