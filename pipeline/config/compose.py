"""Composing the real `conf/` in-process (plugins imported, explicit knobs pinned)."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, ValidationError

from pipeline.config.schema import CONF_DIR
from pipeline.config.sections import config_class, register_configs, register_open_schema
from pipeline.config.validation import ConfigError


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose the real `conf/` with overrides, as the CLI would (for tests and tools):
    knobs the overrides (or a preset) set explicitly are pinned (`pins.py`).

    The `plugins` the config names are imported first when they bring config sections
    (`sections.register_section`), so the schema Hydra composes onto (here and in the
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


def import_plugins(modules: list[str]) -> None:
    """Import the `plugins` modules (they register pooling variants or data loaders)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import '{name}' ({err})") from None


def on_schema(cfg: DictConfig) -> DictConfig:
    """`cfg` typed by the schema (with its plugins' sections), as the project's own config
    is composed: a cluster role's job file is composed as plain YAML."""
    if OmegaConf.get_type(cfg) is not dict:
        return cfg
    schema = config_class(list(cfg.get("plugins") or []))
    return OmegaConf.merge(OmegaConf.structured(schema), cfg)


def typed_data(data: DictConfig) -> Any:
    """The data section as its dataclass, with the other loaders' sections left out (None):
    unused, and a preset may fill them in part (`+experiment=quick` sizes the synthetic
    task whatever the loader)."""
    node = data.copy()
    for key in list(node.keys()):
        if key != node.loader and OmegaConf.is_dict(node[key]):
            try:
                node[key] = None
            except ValidationError:  # a section every loader uses (audit, near_duplicates)
                pass
    return typed(node)


def typed(section: DictConfig) -> Any:
    """A config section as its schema's dataclass, checked and resolved: what crosses from
    the commands into the packages below them keeps its types (`prepare(typed_data(cfg.data))`)."""
    try:
        return OmegaConf.to_object(section)
    except MissingMandatoryValue as err:
        key = err.full_key
        raise ConfigError(f"{key}: no value given (set {key}=...)") from None
