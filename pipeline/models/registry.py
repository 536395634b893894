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
    # How the label is spelled from the settings, when joining the label knobs with "-"
    # would not keep labels apart within LABEL_LENGTH_SHOWN characters.
    labeller: Callable[[Mapping[str, Any]], str] | None = None
    # A dataclass with defaults: the variant's own typed section `model.<name>`, which the
    # layer factory reads from its settings (`settings[name]`); searchable as `name.key`.
    config: type | None = None

    @property
    def trims_padding(self) -> bool:
        return self.mask_aware if self.bucketing is None else self.bucketing

    def label(self, settings: Mapping[str, Any]) -> str:
        if self.labeller is not None:
            return self.labeller(settings)
        head = self.short_name or self.name
        return "-".join([head, *(str(settings[k]) for k in self.label_knobs)])


POOLINGS: dict[str, PoolingVariant] = {}


def register_pooling(variant: PoolingVariant, replace: bool = False) -> PoolingVariant:
    if variant.name in POOLINGS and not replace:
        raise ValueError(f"pooling '{variant.name}' is already registered")
    if variant.config is not None:
        from pipeline.config.sections import register_section

        register_section("model", variant.name, variant.config)
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


# ---------------------------------------------------------------- built-in variants


NORMALIZER_CHOICES = ("softmax", "sparsemax")
HEAD_CHOICES = (1, 2, 4)
MERGE_CHOICES = ("concat", "mean")


def _attention_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What every masked attention layer reads: heads, their merge, normaliser, temperature
    (settings logged before these knobs existed read as the single-head softmax)."""
    return {
        "heads": int(settings.get("attention_heads", 1)),
        "merge": settings.get("attention_head_merge", "concat"),
        "normalizer": settings.get("attention_normalizer", "softmax"),
        "temperature": float(settings.get("attention_temperature", 1.0)),
    }


def _attention_head(word: str, settings: Mapping[str, Any]) -> str:
    """'attn', 'attn4', 'spattn', 'spdot2': sparsemax prefixes 'sp', several heads append
    their number, so every combination differs within the first 10 characters."""
    options = _attention_options(settings)
    sparse = "sp" if options["normalizer"] == "sparsemax" else ""
    heads = str(options["heads"]) if options["heads"] > 1 else ""
    return f"{sparse}{word}{heads}"


def _attention(settings: Mapping[str, Any], name: str):
    from pipeline.models.layers import AttentionPooling

    return AttentionPooling(
        activation=settings["attention_activation"],
        hidden_units=settings.get("attention_hidden", 0),
        name=name,
        **_attention_options(settings),
    )


def _dot_attention(settings: Mapping[str, Any], name: str):
    from pipeline.models.layers import DotProductAttentionPooling

    return DotProductAttentionPooling(
        key_units=settings.get("attention_hidden", 0), name=name, **_attention_options(settings)
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
        label_knobs=("attention_activation", "attention_normalizer", "attention_heads"),
        short_name="attn",
        knob_choices={
            "attention_activation": ("tanh", "none"),
            "attention_normalizer": NORMALIZER_CHOICES,
            "attention_heads": HEAD_CHOICES,
            "attention_head_merge": MERGE_CHOICES,
        },
        labeller=lambda s: f"{_attention_head('attn', s)}-{s['attention_activation']}",
        description="additive attention over real steps: scores w.h (none) or tanh(w.h+b), "
        "optional hidden projection (attention_hidden); softmax or sparsemax; 1-4 heads",
    )
)
register_pooling(
    PoolingVariant(
        "dot_attention",
        _dot_attention,
        attention_weights=True,
        label_knobs=("attention_normalizer", "attention_heads"),
        short_name="dot",
        knob_choices={
            "attention_normalizer": NORMALIZER_CHOICES,
            "attention_heads": HEAD_CHOICES,
            "attention_head_merge": MERGE_CHOICES,
        },
        labeller=lambda s: _attention_head("dot", s),
        description="scaled dot-product attention with a learned query per head, "
        "q.(W_k h)/sqrt(d_k) (attention_hidden: d_k, 0 = no key projection)",
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
