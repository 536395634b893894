"""Config schema (Hydra structured configs), validation and composition helpers.

The dataclasses below are registered in Hydra's ConfigStore as the schema that
`conf/config.yaml` merges onto, so a wrong type or an unknown key fails while
Hydra composes the config, before TensorFlow is imported. Range and
cross-field checks that a type cannot express live in `validate`.
This module must stay light: no tensorflow, keras_tuner or mlflow imports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.errors import UserFacingError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

POOLINGS = ("attention", "mean", "max", "last", "classic")
ATTENTION_ACTIVATIONS = ("tanh", "none")
TUNER_KINDS = ("random", "bayesian", "hyperband", "grid")
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "val_macro_f1": "max"}
HP_TYPES = ("choice", "int", "float", "boolean", "fixed")


class ConfigError(UserFacingError, ValueError):
    """A config value is wrong; the message names the key and the problem."""


@dataclass
class SyntheticConfig:
    n_examples: int = 3000
    n_classes: int = 3
    min_tokens: int = 8
    max_tokens: int = 80
    filler_vocab: int = 400
    keys_per_class: int = 4
    min_keys: int = 2
    max_keys: int = 3
    # Keys of other classes planted too (capped below the label's own count).
    other_class_keys: int = 1
    distractor_tokens: int = 12
    distractors_per_example: int = 2
    label_noise: float = 0.0
    seed: int = 0


@dataclass
class CsvConfig:
    path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Keep only rows whose label is in this list (None keeps every label).
    labels: list[str] | None = None
    # Rename raw labels; when non-empty every kept raw label must be a key.
    label_map: dict[str, str] = field(default_factory=dict)


@dataclass
class TextDirConfig:
    root: str | None = None
    train_split: str = "train"
    test_split: str | None = "test"
    extension: str = ".txt"


@dataclass
class DataConfig:
    loader: str = "synthetic"
    name: str = "synthetic"
    max_len: int = 80
    vocab_size: int = 5000
    min_count: int = 1
    lowercase: bool = True
    token_pattern: str = r"[\w@#']+|[^\w\s]"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    # How to treat bytes that are not UTF-8: "strict" fails naming the file, "replace" substitutes.
    encoding_errors: str = "strict"
    # The class weighting this dataset wants (train.class_weight follows it by default).
    class_weight: str = "none"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    csv: CsvConfig = field(default_factory=CsvConfig)
    text_dir: TextDirConfig = field(default_factory=TextDirConfig)


@dataclass
class ModelConfig:
    embedding_dim: int = 32
    units: int = 32
    bidirectional: bool = False
    pooling: str = "attention"
    attention_activation: str = "tanh"
    # 0 scores each state directly (w.h); >0 adds a projection of that size first.
    attention_hidden: int = 0
    dropout: float = 0.0
    dense_units: int = 0


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 2
    restore_best_weights: bool = True


@dataclass
class BucketingConfig:
    enabled: bool = True
    # Number of length buckets: bounds the number of batch shapes (and so retracing).
    n_buckets: int = 4


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 0.003
    clipnorm: float | None = 1.0
    seed: int = 0
    # TensorFlow op determinism: a run retrains to the same metrics (pipeline.reproduce).
    deterministic: bool = True
    # "none" or "balanced" (inverse class frequency on the training split).
    class_weight: str = "none"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    bucketing: BucketingConfig = field(default_factory=BucketingConfig)


@dataclass
class HyperParamSpec:
    """One search dimension. `when` makes it conditional: {parent_name: [values]}."""

    type: str = MISSING
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    value: Any = None
    when: dict[str, list[Any]] | None = None


@dataclass
class TunerConfig:
    kind: str = "random"
    max_trials: int = 6
    executions_per_trial: int = 1
    seed: int = 0
    objective: str = "val_accuracy"
    max_consecutive_failed_trials: int = 3
    directory: str = "mlruns/tuner"
    # bayesian
    num_initial_points: int | None = None
    alpha: float = 0.0001
    beta: float = 2.6
    # hyperband
    max_epochs: int = 4
    factor: int = 3
    hyperband_iterations: int = 1


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "attention-search"
    log_model: bool = True
    log_datasets: bool = True
    # Seconds to wait for a remote tracking server before failing (checked before training).
    connect_timeout: int = 10


@dataclass
class AttentionConfig:
    """Attention plots and metrics per trial (saliency for poolings without weights)."""

    enabled: bool = True
    panel_size: int = 6
    panel_seed: int = 0
    # Tokens shown per heatmap row; longer texts get a window around the top weight.
    max_tokens: int = 40
    # 0: plot only the final (best-epoch) model; N: also every N epochs.
    plot_every: int = 0


@dataclass
class SearchConfig:
    # Re-running with the same name continues that search (keras-tuner state + parent run).
    name: str | None = None
    # Continue the named search, or the latest one when no name is given.
    resume: bool = False
    # Start the named search again from scratch even if its settings changed.
    force_new: bool = False
    verbose: bool = False
    top_k: int = 5
    evaluate_test: bool = True
    # Replicates: every configuration the tuner picks is trained once per seed, each seed
    # its own child run (tagged with the configuration's group); the tuner ranks the mean.
    # None: one run per configuration with train.seed.
    seeds: list[int] | None = None


@dataclass
class ClusterConfig:
    """Where trials run: this process (local) or keras-tuner's chief/worker processes."""

    mode: str = "local"  # local | workers
    n_workers: int = 2
    # TensorFlow intra- and inter-op threads per worker (0: TensorFlow decides).
    threads_per_worker: int = 1
    # Pin worker N to CPU (N-1) mod cpu_count (Linux), so a worker's tf.data and Python
    # threads stay on its own core instead of borrowing the others'.
    pin_cpus: bool = True
    # A dead worker is restarted with the same tuner id (keras-tuner hands it back its trial).
    max_restarts: int = 2
    oracle_host: str = "127.0.0.1"
    oracle_port: int = 0  # 0: a free port
    # Set by the launcher for the processes it starts (or by hand on other hosts).
    role: str | None = None  # chief | worker
    worker_id: str | None = None
    parent_run_id: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # Plain dicts (checked by validate_search_space against HyperParamSpec) so that
    # `+search_space.NAME={type: ..., ...}` can add a dimension from the command line.
    search_space: dict[str, Any] = field(default_factory=dict)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def register_configs() -> None:
    """Register the schema `conf/config.yaml` builds on (idempotent)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


register_configs()

if not OmegaConf.has_resolver("project_root"):
    # ${project_root:} in YAML: paths that work whatever the current directory.
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose the real `conf/` with overrides, as the CLI would (for tests and tools)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return cfg


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def search_space_dims(space: DictConfig | dict) -> dict[str, dict[str, Any]]:
    """The search space as plain dicts (`values` would clash with DictConfig.values())."""
    if isinstance(space, DictConfig):
        space = OmegaConf.to_container(space, resolve=True)
    return {name: dict(spec) if isinstance(spec, dict) else spec for name, spec in space.items()}


def validate_search_space(space: DictConfig | dict) -> None:
    """Check every dimension names a known knob and has a usable range or choice list."""
    model_keys = set(ModelConfig.__dataclass_fields__)
    train_keys = set(TrainConfig.__dataclass_fields__)
    dims = search_space_dims(space)
    allowed = {"pooling": POOLINGS, "attention_activation": ATTENTION_ACTIVATIONS}
    for name, spec in dims.items():
        key = f"search_space.{name}"
        _require(
            name in model_keys or name in train_keys,
            key,
            f"unknown dimension (not a model.* or train.* knob; known: "
            f"{', '.join(sorted(model_keys | train_keys))})",
        )
        _require(
            isinstance(spec, dict), key, "must be a mapping like {type: choice, values: [...]}"
        )
        unknown = set(spec) - set(HyperParamSpec.__dataclass_fields__)
        _require(
            not unknown,
            key,
            f"unknown field(s) {sorted(unknown)}; allowed: "
            f"{', '.join(HyperParamSpec.__dataclass_fields__)}",
        )
        kind = spec.get("type")
        _require(kind in HP_TYPES, f"{key}.type", f"'{kind}' not in {list(HP_TYPES)}")
        if kind == "choice":
            values = spec.get("values")
            _require(bool(values), f"{key}.values", "choice needs a non-empty list of values")
            if name in allowed:
                bad = [v for v in values if v not in allowed[name]]
                _require(
                    not bad, f"{key}.values", f"unknown {name} {bad}; known {list(allowed[name])}"
                )
        elif kind in ("int", "float"):
            lo, hi = spec.get("min"), spec.get("max")
            _require(lo is not None and hi is not None, key, f"{kind} needs min and max")
            _require(lo <= hi, key, f"min {lo} > max {hi}")
            sampling = spec.get("sampling", "linear")
            _require(
                sampling in ("linear", "log", "reverse_log"),
                f"{key}.sampling",
                f"'{sampling}' not in [linear, log, reverse_log]",
            )
            if sampling != "linear":
                _require(lo > 0, f"{key}.min", "log sampling needs min > 0")
        elif kind == "fixed":
            _require(spec.get("value") is not None, f"{key}.value", "fixed needs a value")
        for parent in (spec.get("when") or {}).keys():
            _require(parent in dims, f"{key}.when", f"parent dimension '{parent}' is not searched")


def validate(cfg: DictConfig) -> None:
    """Range and cross-field checks; raises ConfigError naming the first bad key."""
    d, m, t, tu = cfg.data, cfg.model, cfg.train, cfg.tuner
    _require(d.max_len > 0, "data.max_len", f"must be > 0, got {d.max_len}")
    _require(d.vocab_size >= 3, "data.vocab_size", f"must be >= 3, got {d.vocab_size}")
    _require(
        0 < d.val_fraction < 1 and 0 <= d.test_fraction < 1,
        "data.val_fraction/test_fraction",
        "must be fractions in (0, 1)",
    )
    _require(
        d.val_fraction + d.test_fraction < 1,
        "data.val_fraction+test_fraction",
        "must leave examples for training",
    )
    _require(
        d.encoding_errors in ("strict", "replace"),
        "data.encoding_errors",
        f"'{d.encoding_errors}' not in [strict, replace]",
    )
    s = d.synthetic
    _require(s.n_classes >= 2, "data.synthetic.n_classes", "needs at least 2 classes")
    _require(
        1 <= s.min_tokens <= s.max_tokens,
        "data.synthetic.min_tokens/max_tokens",
        "need 1 <= min_tokens <= max_tokens",
    )
    _require(
        1 <= s.min_keys <= s.max_keys,
        "data.synthetic.min_keys/max_keys",
        "need 1 <= min_keys <= max_keys",
    )
    _require(m.units > 0, "model.units", f"must be > 0, got {m.units}")
    _require(m.embedding_dim > 0, "model.embedding_dim", f"must be > 0, got {m.embedding_dim}")
    _require(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _require(m.pooling in POOLINGS, "model.pooling", f"'{m.pooling}' not in {list(POOLINGS)}")
    _require(
        m.attention_activation in ATTENTION_ACTIVATIONS,
        "model.attention_activation",
        f"'{m.attention_activation}' not in {list(ATTENTION_ACTIVATIONS)}",
    )
    _require(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    _require(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _require(t.learning_rate > 0, "train.learning_rate", f"must be > 0, got {t.learning_rate}")
    _require(
        t.class_weight in ("none", "balanced"),
        "train.class_weight",
        f"'{t.class_weight}' not in [none, balanced]",
    )
    _require(t.bucketing.n_buckets >= 1, "train.bucketing.n_buckets", "must be >= 1")
    a = cfg.attention
    _require(a.panel_size >= 1, "attention.panel_size", f"must be >= 1, got {a.panel_size}")
    _require(a.max_tokens >= 1, "attention.max_tokens", f"must be >= 1, got {a.max_tokens}")
    _require(a.plot_every >= 0, "attention.plot_every", f"must be >= 0, got {a.plot_every}")
    _require(tu.kind in TUNER_KINDS, "tuner.kind", f"'{tu.kind}' not in {list(TUNER_KINDS)}")
    _require(tu.max_trials > 0, "tuner.max_trials", f"must be > 0, got {tu.max_trials}")
    _require(tu.executions_per_trial > 0, "tuner.executions_per_trial", "must be > 0")
    _require(
        tu.objective in OBJECTIVES,
        "tuner.objective",
        f"'{tu.objective}' not in {list(OBJECTIVES)}",
    )
    _require(tu.max_epochs > 0 and tu.factor >= 2, "tuner.max_epochs/factor", "need > 0 and >= 2")
    c = cfg.cluster
    _require(c.mode in ("local", "workers"), "cluster.mode", f"'{c.mode}' not in [local, workers]")
    _require(c.n_workers >= 0, "cluster.n_workers", f"must be >= 0, got {c.n_workers}")
    _require(c.threads_per_worker >= 0, "cluster.threads_per_worker", "must be >= 0")
    _require(
        c.role in (None, "chief", "worker"), "cluster.role", f"'{c.role}' not in [chief, worker]"
    )
    _require(
        c.role != "worker" or bool(c.parent_run_id),
        "cluster.parent_run_id",
        "a worker needs the parent run id of its search",
    )
    seeds = list(cfg.search.seeds or [])
    _require(len(seeds) == len(set(seeds)), "search.seeds", f"repeated seeds in {seeds}")
    _require(
        not (seeds and "seed" in cfg.search_space),
        "search.seeds",
        "search_space.seed is searched too; use one of them",
    )
    validate_search_space(cfg.search_space)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


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
