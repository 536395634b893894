"""Composing the real `conf/` in-process, and the plain forms other packages consume."""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import CONF_DIR, register_configs, register_open_schema
from pipeline.config.validation import ConfigError


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose the real `conf/` with overrides, as the CLI would (for tests and tools):
    knobs the overrides (or a preset) set explicitly are pinned (`pins.py`).

    The `plugins` the config names are imported first when they bring config sections
    (`schema.register_section`), so the schema Hydra composes onto (here and in the
    `@hydra.main` that follows on the command line) types them and fills their defaults."""
    from pipeline.config.pins import pin_explicit_knobs

    overrides = list(overrides or [])
    try:
        cfg = _compose(overrides)
    except Exception:
        plugins = _plugins_named(overrides)
        if not plugins:
            raise
        import_plugins(plugins)
        if not register_configs(plugins):
            raise
        cfg = _compose(overrides)  # a failure now is the config's own
    else:
        plugins = list(cfg.get("plugins") or [])
        import_plugins(plugins)
        if register_configs(plugins):  # the sections differ from the last composition's
            cfg = _compose(overrides)
    pin_explicit_knobs(cfg, overrides)
    return cfg


def _plugins_named(overrides: list[str]) -> list[str]:
    """`plugins` of a config the typed schema refused: composed without the schema."""
    register_open_schema()
    forced = [  # a plugin's keys do not exist yet in an untyped config: add them
        f"++{o}" if "=" in o and "." in o.split("=")[0] and o[0] not in "+~" else o
        for o in overrides
    ]
    try:
        return list(_compose(forced).get("plugins") or [])
    except Exception:
        return []
    finally:
        register_configs([])


def hydra_overrides() -> list[str]:
    """The command-line overrides of the running Hydra app ([] outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside @hydra.main (tests, tools)
        return []


def to_plain(cfg: DictConfig) -> Any:
    """The resolved config as plain Python containers (enum values as their strings)."""
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


def import_plugins(modules: list[str]) -> None:
    """Import the `plugins` modules (they register pooling variants or data loaders)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import '{name}' ({err})") from None
