"""The pooling registry: one entry per pooling variant, read by everything that cares.

An entry says how to build the layer, whether it honours the padding mask, whether it
yields attention weights (otherwise heatmaps show occlusion saliency), whether length
bucketing applies, how the variant is labelled in plots, tags and reports, and which
model knobs it reads (with their allowed values). Config validation, model building,
batching, labels, report grouping, the summary table, the UI capture and the pooling
bench all ask this module; YAML refers to variants by name.

Adding a variant from outside `pipeline/`: define a Keras layer (with
`return_attention_scores` if it has weights), call `register_pooling(...)` in a module,
and list that module in the config's `plugins`. Light on purpose: layers are imported
only when a factory runs, so validation never loads TensorFlow.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from pipeline.config import import_plugins, validate

LayerFactory = Callable[[Mapping[str, Any], str], Any]  # (model settings, layer name) -> Layer


@dataclass(frozen=True)
class PoolingVariant:
    name: str
    make_layer: LayerFactory
    # The embedding masks padding (mask_zero) and the layer honours it.
    mask_aware: bool = True
    # The layer accepts `return_attention_scores=True` and returns (pooled, weights).
    attention_weights: bool = False
    # Batches trimmed to their length bucket (None: exactly when mask-aware; an unmasked
    # layer would see a different amount of padding, so trimming changes what it computes).
    bucketing: bool | None = None
    # Model knobs that are part of the variant's label ("attn-tanh").
    label_knobs: tuple[str, ...] = ()
    # The label's first word when the name is too long: MLflow's parallel-coordinates plot
    # shows a categorical value's first 10 characters, so labels must differ within them.
    short_name: str | None = None
    # Allowed values of the model knobs this variant reads.
    knob_choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def trims_padding(self) -> bool:
        return self.mask_aware if self.bucketing is None else self.bucketing

    def label(self, settings: Mapping[str, Any]) -> str:
        head = self.short_name or self.name
        return "-".join([head, *(str(settings[k]) for k in self.label_knobs)])


POOLINGS: dict[str, PoolingVariant] = {}


def register_pooling(variant: PoolingVariant, replace: bool = False) -> PoolingVariant:
    if variant.name in POOLINGS and not replace:
        raise ValueError(f"pooling '{variant.name}' is already registered")
    POOLINGS[variant.name] = variant
    return variant


def get_pooling(name: str) -> PoolingVariant:
    try:
        return POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; known: {', '.join(POOLINGS)}") from None


def variant_of(settings: Mapping[str, Any]) -> PoolingVariant:
    """The registry entry of a model's settings (`settings["pooling"]`)."""
    return get_pooling(settings["pooling"])


def variant_label(settings: Mapping[str, Any]) -> str:
    """'attn-tanh', 'mean', ...: how plots, tags, run names and reports name a
    configuration (distinct within 10 characters: see `PoolingVariant.short_name`)."""
    return variant_of(settings).label(settings)


LABEL_LENGTH_SHOWN = 10  # characters of a categorical value MLflow's plots show


def canonical_label(label: str) -> str:
    """A label as this version writes it: runs logged before short names existed are
    tagged `attention-tanh`; they read as `attn-tanh`, so old and new runs compare."""
    for variant in POOLINGS.values():
        if variant.short_name and label.startswith(f"{variant.name}-"):
            return variant.short_name + label[len(variant.name) :]
    return label


def label_knobs() -> set[str]:
    """Knobs already spelled out by a variant label (summary and report hide them)."""
    return {"pooling", *(k for v in POOLINGS.values() for k in v.label_knobs)}


def knob_options() -> dict[str, tuple[Any, ...]]:
    """Allowed values of every model knob the registry owns, for config validation."""
    options: dict[str, tuple[Any, ...]] = {"pooling": tuple(POOLINGS)}
    for variant in POOLINGS.values():
        for knob, values in variant.knob_choices.items():
            options[knob] = tuple(dict.fromkeys([*options.get(knob, ()), *values]))
    return options


def labelled_settings() -> list[tuple[str, dict[str, Any]]]:
    """Every variant with every combination of its label knobs: (label, model settings)."""
    out = []
    for variant in POOLINGS.values():
        choices = [variant.knob_choices.get(k, ()) for k in variant.label_knobs]
        for combo in itertools.product(*choices):
            settings = {
                "pooling": variant.name,
                **dict(zip(variant.label_knobs, combo, strict=True)),
            }
            out.append((variant.label(settings), settings))
    return out


def validate_config(cfg: DictConfig) -> None:
    """The whole config check: plugins imported, then ranges, cross-field rules, and
    pooling names and knobs against this registry (ConfigError naming the key)."""
    import_plugins(list(cfg.get("plugins") or []))
    validate(cfg, knob_options())


# ---------------------------------------------------------------- built-in variants


def _attention(settings: Mapping[str, Any], name: str):
    from pipeline.models.layers import AttentionPooling

    return AttentionPooling(
        activation=settings["attention_activation"],
        hidden_units=settings.get("attention_hidden", 0),
        name=name,
    )


def _layer(class_name: str) -> LayerFactory:
    def make(settings: Mapping[str, Any], name: str):
        from pipeline.models import layers

        return getattr(layers, class_name)(name=name)

    return make


register_pooling(
    PoolingVariant(
        "attention",
        _attention,
        attention_weights=True,
        label_knobs=("attention_activation",),
        short_name="attn",
        knob_choices={"attention_activation": ("tanh", "none")},
        description="masked softmax over real steps of w.h (none) or tanh(w.h+b); "
        "optional hidden projection (attention_hidden)",
    )
)
register_pooling(PoolingVariant("mean", _layer("MaskedMeanPooling"), description="masked mean"))
register_pooling(PoolingVariant("max", _layer("MaskedMaxPooling"), description="masked max"))
register_pooling(PoolingVariant("last", _layer("LastStepPooling"), description="last real step"))
register_pooling(
    PoolingVariant(
        "classic",
        _layer("ClassicAttention"),
        mask_aware=False,
        attention_weights=True,
        description="the well-known Keras recipe without its Lambda: softmax over all "
        "steps, padding included (the baseline)",
    )
)
