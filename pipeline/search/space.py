"""YAML search space -> keras-tuner hyperparameters -> a compiled model.

Dimensions are model.* or train.* knobs. Conditional dimensions (`when`) are
declared inside `hp.conditional_scope`, so keras-tuner only samples them when
their parent has one of the listed values, and `active_values` leaves them out
otherwise (they are never logged as if they had been used). `trial_settings` and
`build_trial_model` are the one way a trial's values become settings and a model:
the tuner, the test-set evaluation, reproduce and the benchmarks all use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras_tuner as kt
from omegaconf import DictConfig

from pipeline.config import HPType, search_space_dims, to_plain, typed, typed_data
from pipeline.config.schema import EmbeddingsConfig, TrainConfig
from pipeline.config.validation import embedding_sources
from pipeline.config.vector_sets import named
from pipeline.data import vectors

HYPERBAND_EPOCHS = "tuner/epochs"
VECTORS_FOLDER = "vectors"  # aligned word vectors, beside keras-tuner's project folders


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


def _in_section(model: Any, name: str) -> bool:
    """`<section>.<key>`: a key of a section of the model config (`embeddings.source`, or
    a plugin's own `<variant>.<key>`)."""
    section, _, knob = name.partition(".")
    inner = model.get(section) if knob else None
    return isinstance(inner, Mapping | DictConfig) and knob in inner


def param_key(cfg: DictConfig, name: str) -> str | None:
    """The dotted config key a searched knob sets (`units` -> `model.units`); None for
    keras-tuner's own `tuner/*` values."""
    if name.startswith("tuner/"):
        return None
    if name in cfg.model or _in_section(cfg.model, name):
        return f"model.{name}"
    if name in cfg.train:
        return f"train.{name}"
    return None


def trial_settings(cfg: DictConfig, values: dict[str, Any]) -> tuple[dict, TrainConfig]:
    """(model settings, train settings): the config with the trial's values applied (the
    model's as a mapping of knobs, what pooling variants and plugins read)."""
    model, train = to_plain(cfg.model), typed(cfg.train)
    trained: dict[str, Any] = {}
    for name, value in values.items():
        if name == HYPERBAND_EPOCHS:
            trained["epochs"] = int(value)
        elif _in_section(model, name):
            section, knob = name.split(".", 1)
            model[section][knob] = value
        elif name in model:
            model[name] = value
        elif name in cfg.train:
            trained[name] = value
    train = replace(train, **trained)
    embeddings = model["embeddings"]
    named_set = named(embeddings["source"])
    if embeddings["source"] == vectors.FILE:  # the embedding size follows the file
        model["embedding_dim"] = vectors.file_dim(Path(embeddings["path"]), embeddings["format"])
    elif named_set is not None:  # ... or the named set
        model["embedding_dim"] = named_set.dim
    elif embeddings["source"] == vectors.TRAINED and embeddings["dim"]:
        model["embedding_dim"] = int(embeddings["dim"])
    return model, train


def trial_vectors(cfg: DictConfig, data, model_settings: dict[str, Any]):
    """The aligned `VectorTable` a trial's embedding starts from (None: random), built
    once per search and vocabulary (`pipeline.data.vectors`)."""
    return vectors.vector_table(
        EmbeddingsConfig(**model_settings["embeddings"]),
        data,
        typed_data(cfg.data),
        int(model_settings["embedding_dim"]),
        Path(cfg.tuner.directory) / VECTORS_FOLDER,
    )


def search_vectors(cfg: DictConfig, data) -> list:
    """Every vector table the search's trials can start from, built (or read from the
    cache) up front, so coverage is known before the first trial and a resume compares
    the vectors' fingerprints. Trained-here tables of a searched integer embedding size
    are built when a trial first asks."""
    space = search_space_dims(cfg.search_space)
    sources = embedding_sources(cfg.model.embeddings.source, space)
    dims: list[Any] = [None]
    spec = space.get("embedding_dim")
    if spec is not None and spec.get("type") == HPType.choice:
        dims = list(spec["values"])
    tables, seen = [], set()
    for source in sources:
        if source == vectors.RANDOM:
            continue
        for dim in dims if source == vectors.TRAINED else [None]:
            values = {"embeddings.source": source, **({"embedding_dim": dim} if dim else {})}
            model, _ = trial_settings(cfg, values)
            table = trial_vectors(cfg, data, model)
            if table is not None and table.fingerprint not in seen:
                seen.add(table.fingerprint)
                tables.append(table)
    return tables


def build_trial_model(
    model_settings: dict[str, Any],
    train: TrainConfig,
    vocab_size: int,
    n_classes: int,
    table=None,
):
    """The compiled classifier of one trial's settings; `table` (a `VectorTable`) gives
    the embedding's starting weights (weights loaded afterwards need none)."""
    from pipeline.models.build import build_model

    return build_model(
        model_settings,
        vocab_size,
        n_classes,
        learning_rate=train.learning_rate,
        clipnorm=train.clipnorm,
        steps_per_execution=train.steps_per_execution,
        embeddings=None if table is None else table.matrix,
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
