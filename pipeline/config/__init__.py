"""Config: the typed schema Hydra composes onto, validation, and compose helpers.

Light on purpose (no tensorflow, keras_tuner or mlflow, nothing else of the project):
`--help`, `--cfg job` and bad overrides are answered from here.
"""

from pipeline.config.compose import (
    compose_config,
    hydra_overrides,
    import_plugins,
    on_schema,
    typed,
    typed_data,
)
from pipeline.config.objectives import (
    VALIDATION_METRICS,
    Objective,
    direction,
    is_better,
    minimised,
)
from pipeline.config.pins import Pin, pin_explicit_knobs
from pipeline.config.plain import config_hash, flatten, search_space_dims, to_plain
from pipeline.config.schema import (
    CONF_DIR,
    PROJECT_ROOT,
    ClassWeight,
    ClusterMode,
    ClusterRole,
    Config,
    HPType,
    PrunerKind,
    TunerKind,
)
from pipeline.config.validation import ConfigError, validate, validate_search_space

__all__ = [
    "on_schema",
    "typed",
    "typed_data",
    "CONF_DIR",
    "PROJECT_ROOT",
    "ClassWeight",
    "ClusterMode",
    "ClusterRole",
    "Config",
    "ConfigError",
    "HPType",
    "Objective",
    "Pin",
    "PrunerKind",
    "TunerKind",
    "VALIDATION_METRICS",
    "compose_config",
    "config_hash",
    "direction",
    "flatten",
    "hydra_overrides",
    "import_plugins",
    "is_better",
    "minimised",
    "pin_explicit_knobs",
    "search_space_dims",
    "to_plain",
    "validate",
    "validate_search_space",
]
