"""The whole config check a command runs once, before anything heavy: the plugins the
config names imported (they register pooling variants, loaders and config sections), then
the schema's ranges and cross-field rules, and pooling names and knobs against the
registry (ConfigError naming the key)."""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.config import import_plugins, validate
from pipeline.models.registry import knob_options


def validate_config(cfg: DictConfig) -> None:
    import_plugins(list(cfg.get("plugins") or []))
    validate(cfg, knob_options())
