"""The plain forms of a config other packages consume: containers, the search space's
dimensions by dotted name, a stable hash, flat keys for MLflow params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(cfg: Any) -> Any:
    """The resolved config (or a section as its schema's dataclass) as plain Python
    containers, enum values as their strings."""
    if not isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def search_space_dims(space: DictConfig | dict) -> dict[str, dict[str, Any]]:
    """The search space as plain dicts (`values` would clash with DictConfig.values()).
    A knob inside a model section is written nested (`embeddings: {source: {type: ...}}`,
    or `+search_space.embeddings.source={...}` on the command line) and named by its
    dotted path (`embeddings.source`): a mapping without `type` groups dimensions."""
    if isinstance(space, DictConfig):
        space = to_plain(space)
    dims: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        if isinstance(spec, dict) and spec and "type" not in spec:
            dims.update({f"{name}.{k}": v for k, v in search_space_dims(spec).items()})
        else:
            dims[name] = dict(spec) if isinstance(spec, dict) else spec
    return dims


def config_hash(obj: Any) -> str:
    """A short stable hash of any JSON-able value (config sections, hp values)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
