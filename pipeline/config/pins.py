"""Explicit values pin searched knobs: what the user set is what trains.

A `model.*` or `train.*` knob given on the command line (or by a multirun sweep), or set
under `model:`/`train:` by an `experiments/` preset, takes that knob out of the search
space for this run and fixes it to the given value; the command line wins over a preset.
Conditional dimensions follow their parent: pinning `pooling=mean` drops
`attention_activation` (it only applies to attention), pinning `pooling=attention`
keeps it, unconditionally. The effective space is what is validated, logged
(`search_space.json`) and compared on resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.config.schema import CONF_DIR, ModelConfig, TrainConfig
from pipeline.config.validation import NESTED_KNOBS

SECTIONS = {
    "model": (set(ModelConfig.__dataclass_fields__) - {"embeddings"}) | set(NESTED_KNOBS),
    "train": set(TrainConfig.__dataclass_fields__),
}


@dataclass(frozen=True)
class Pin:
    knob: str
    value: Any
    source: str  # "override" or "experiment=NAME"
    dropped: tuple[str, ...] = field(default=())  # conditional dimensions that went with it

    def describe(self) -> str:
        text = f"{self.knob} fixed at {self.value} by {self.source}; not searched"
        if self.dropped:
            text += f" ({', '.join(self.dropped)} dropped: inactive at this value)"
        return text


def _split(override: str) -> tuple[str, str] | None:
    """'+model.units=16' -> ('model.units', '16'); deletions and flags -> None."""
    if override.startswith("~") or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return key.lstrip("+"), value


def _flat_keys(section: dict, prefix: str = "") -> list[str]:
    """A preset's section as dotted keys: {embeddings: {source: x}} -> embeddings.source
    (and `embeddings` itself)."""
    keys = []
    for key, value in section.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


def explicit_knobs(overrides: Iterable[str]) -> dict[str, str]:
    """Searched-knob candidates set explicitly: knob -> where (presets first, so the
    command line, which Hydra applies last, names the source when both set it)."""
    found: dict[str, str] = {}
    parsed = [p for p in (_split(o) for o in overrides) if p]
    for key, value in parsed:
        if key == "experiment":
            preset = CONF_DIR / "experiment" / f"{value}.yaml"
            if preset.exists():
                content = OmegaConf.load(preset)
                for section, knobs in SECTIONS.items():
                    part = content.get(section)
                    flat = _flat_keys(OmegaConf.to_container(part)) if part else []
                    for knob in flat:
                        if knob in knobs:
                            found[knob] = f"experiment={value}"
    for key, _ in parsed:
        section, _, knob = key.partition(".")
        if knob in SECTIONS.get(section, ()):
            found[knob] = "override"
    return found


def _delete(space: DictConfig, knob: str) -> None:
    """Remove a dimension, and the group it leaves empty (`embeddings: {}`)."""
    group, _, leaf = knob.rpartition(".")
    node = OmegaConf.select(space, group) if group else space
    del node[leaf]
    if group and not node:
        _delete(space, group)


def pin_knobs(cfg: DictConfig, sources: dict[str, str]) -> list[Pin]:
    """Take every knob of `sources` that the space samples out of it (in place)."""
    space = cfg.search_space
    pinned: dict[str, tuple[Any, str]] = {}
    for knob, source in sources.items():
        node = OmegaConf.select(space, knob)  # also a nested one: embeddings.source
        if isinstance(node, DictConfig) and "type" in node:
            section = "model" if knob in SECTIONS["model"] else "train"
            pinned[knob] = (OmegaConf.select(cfg[section], knob), source)
    dropped: dict[str, list[str]] = {k: [] for k in pinned}
    with open_dict(cfg):
        for knob in pinned:
            _delete(space, knob)
        changed = True
        while changed:  # a dimension whose parent went inactive goes too
            changed = False
            for name in list(space.keys()):
                when = space[name].get("when") or {}
                for parent in list(when.keys()):
                    if parent in pinned:
                        value = pinned[parent][0]
                        if value in list(when[parent]):
                            del space[name]["when"][parent]
                            if not space[name]["when"]:
                                del space[name]["when"]
                        else:
                            del space[name]
                            dropped[parent].append(name)
                            changed = True
                            break
                    elif any(parent in gone for gone in dropped.values()):
                        root = next(k for k, v in dropped.items() if parent in v)
                        del space[name]
                        dropped[root].append(name)
                        changed = True
                        break
    return [Pin(k, v, s, tuple(dropped[k])) for k, (v, s) in pinned.items()]


def pin_explicit_knobs(cfg: DictConfig, overrides: Iterable[str]) -> list[Pin]:
    return pin_knobs(cfg, explicit_knobs(overrides))
