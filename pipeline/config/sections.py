"""Config sections plugins bring along, and the schema Hydra composes onto registered in
its ConfigStore as `config_schema` (the base `conf/config.yaml` merges onto it), with the
sections of the plugins a config names."""

from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from pipeline.config.schema import Config, DataConfig, ModelConfig

# Config sections plugins bring along: `data.<loader>` for a registered data loader,
# `model.<variant>` for a pooling variant; group -> section name -> (dataclass, module).
PLUGIN_GROUPS = ("data", "model")
PLUGIN_SECTIONS: dict[str, dict[str, tuple[type, str]]] = {g: {} for g in PLUGIN_GROUPS}


def register_section(group: str, name: str, schema: type, module: str | None = None) -> None:
    """Let a plugin's loader or pooling variant carry its own typed section `group.name`:
    `schema` is a dataclass whose fields all have defaults (the section's defaults, since
    no YAML of `conf/` knows them). It joins the schema of every config whose `plugins`
    list the registering module (`module`, by default the dataclass's own)."""
    if group not in PLUGIN_SECTIONS:
        raise ValueError(f"plugin sections go in {' or '.join(PLUGIN_GROUPS)}, not {group!r}")
    owner = module or schema.__module__
    if name in {"data": DataConfig, "model": ModelConfig}[group].__dataclass_fields__:
        raise ValueError(f"{group}.{name} is a built-in key; a plugin section needs its own name")
    PLUGIN_SECTIONS[group][name] = (schema, owner)


def plugin_sections(plugins: list[str]) -> dict[str, dict[str, type]]:
    """The sections the `plugins` modules registered (imported already), by group."""
    return {
        group: {n: s for n, (s, owner) in sections.items() if owner in plugins}
        for group, sections in PLUGIN_SECTIONS.items()
    }


def config_class(plugins: list[str] | None = None) -> type:
    """`Config`, extended with the sections of `plugins` (each a typed field with its
    dataclass's defaults); `Config` itself when they bring none."""
    sections = plugin_sections(list(plugins or []))
    if not any(sections.values()):
        return Config
    groups = {"data": DataConfig, "model": ModelConfig}
    fields = []
    for group, own in sections.items():
        if own:
            extended = make_dataclass(
                groups[group].__name__,
                [(name, schema, field(default_factory=schema)) for name, schema in own.items()],
                bases=(groups[group],),
            )
            fields.append((group, extended))
    return make_dataclass("Config", fields, bases=(Config,))


_stored: dict[str, Any] = {"sections": plugin_sections([])}


def register_configs(plugins: list[str] | None = None) -> bool:
    """Register the schema `conf/config.yaml` builds on, with the sections the named
    plugins bring; False when the registered one already has exactly those."""
    sections = plugin_sections(list(plugins or []))
    if sections == _stored["sections"] and "registered" in _stored:
        return False
    ConfigStore.instance().store(name="config_schema", node=config_class(plugins))
    _stored.update(sections=sections, registered=True)
    return True


def register_open_schema() -> None:
    """An untyped `config_schema`: a composition that only needs to read `plugins` from a
    config whose plugin sections the typed schema does not know yet."""
    ConfigStore.instance().store(name="config_schema", node={})
    _stored.pop("registered", None)


register_configs()
