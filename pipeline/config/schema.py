"""The config schema: types and allowed values, never defaults (`sections.py` registers
it as the `config_schema` that `conf/config.yaml` merges onto, so a wrong type, an unknown
key or a value outside an enumeration fails while Hydra composes, before TensorFlow loads).
Every value comes from `conf/` and `experiments/`; `None` marks sections and knobs only
one option of a group uses. Range and cross-field checks live in `validation.py`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.data_schema import (  # noqa: F401  (re-exported)
    AuditConfig,
    ClassWeight,
    ConflictingLabels,
    CsvConfig,
    DataConfig,
    Dedupe,
    EncodingErrors,
    NearDuplicatesConfig,
    SyntheticConfig,
    SyntheticRule,
    TableConfig,
    TextDirConfig,
)
from pipeline.config.objectives import Objective

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CONF_DIR = PROJECT_ROOT / "conf"


class TunerKind(StrEnum):
    random = "random"
    bayesian = "bayesian"
    hyperband = "hyperband"
    grid = "grid"


class HPType(StrEnum):
    choice = "choice"
    int = "int"
    float = "float"
    boolean = "boolean"
    fixed = "fixed"


class PrunerKind(StrEnum):
    """`tuner.pruning`; each name has one factory in pipeline/search/pruning.py."""

    none = "none"
    median = "median"  # Optuna's MedianPruner, over epochs
    successive_halving = "successive_halving"  # over epochs
    wilcoxon = "wilcoxon"  # WilcoxonPruner, over seeds (needs search.seeds >= 3)

    @property
    def over_epochs(self) -> bool:
        return self in (PrunerKind.median, PrunerKind.successive_halving)


class Sampling(StrEnum):
    linear = "linear"
    log = "log"
    reverse_log = "reverse_log"


class ClusterMode(StrEnum):
    local = "local"
    workers = "workers"


class ClusterRole(StrEnum):
    chief = "chief"
    worker = "worker"
    racer = "racer"  # trains a race's assignments (search.seeds=adaptive on a cluster)


class LstmKernel(StrEnum):
    fused = "fused"  # TensorFlow's BlockLSTM op on CPU (pipeline/models/fused_lstm.py)
    keras = "keras"  # Keras' own while loop


class XlaLstm(StrEnum):
    """What the fused LSTM runs inside an XLA compilation (XLA has no BlockLSTM kernel)."""

    bptt = "bptt"  # its own recurrence, backward pass written out (pipeline/models/xla_lstm.py)
    keras = "keras"  # Keras' loop and TensorFlow's gradient of it


class EmbeddingSource(StrEnum):
    random = "random"  # Keras' own initializer
    file = "file"  # a vector file read by gensim
    trained = "trained"  # gensim Word2Vec / FastText trained here


class EmbeddingMethod(StrEnum):
    word2vec = "word2vec"
    fasttext = "fasttext"


class VectorFormat(StrEnum):
    auto = "auto"
    glove = "glove"
    word2vec = "word2vec"
    word2vec_binary = "word2vec_binary"


@dataclass
class EmbeddingsConfig:
    source: str  # an EmbeddingSource or a named set (config/vector_sets.yaml); validated
    path: str | None
    format: VectorFormat
    lowercase_fallback: bool
    oov_seed: int
    dim: int | None
    method: EmbeddingMethod
    epochs: int
    window: int
    min_count: int
    seed: int
    corpus: str | None
    corpus_column: str


@dataclass
class ModelConfig:
    embedding_dim: int
    embedding_trainable: bool
    embeddings: EmbeddingsConfig
    units: int
    bidirectional: bool
    lstm_kernel: LstmKernel
    xla_lstm: XlaLstm
    # A name in the pooling registry (pipeline.models.registry), checked there.
    pooling: str
    attention_activation: str
    attention_hidden: int
    attention_normalizer: str
    attention_temperature: float
    attention_heads: int
    attention_head_merge: str
    dropout: float
    recurrent_dropout: float
    dense_units: int


@dataclass
class EarlyStoppingConfig:
    enabled: bool
    monitor: str
    patience: int
    restore_best_weights: bool


@dataclass
class BucketingConfig:
    enabled: bool
    n_buckets: int
    exact: bool


JIT_MODES = ("auto", "true", "false")  # train.jit_compile (YAML may give true/false)


@dataclass
class XlaConfig:
    """What `train.jit_compile=auto` weighs, measured on this machine."""

    compile_s_per_shape: float
    speedup: float
    tokens_per_s: float
    shards: Any  # auto | n >= 1: XLA blocks of each batch run at once (training.sharded)


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    clipnorm: float | None
    steps_per_execution: int
    seed: int
    deterministic: bool
    class_weight: ClassWeight
    early_stopping: EarlyStoppingConfig
    bucketing: BucketingConfig
    jit_compile: Any  # auto | true | false (YAML booleans allowed; pipeline/training/xla.py)
    xla: XlaConfig


@dataclass
class HyperParamSpec:
    """One search dimension. `when` makes it conditional: {parent_name: [values]}."""

    type: HPType
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: Sampling = Sampling.linear
    value: Any = None
    when: dict[str, list[Any]] | None = None


@dataclass
class TunerConfig:
    kind: TunerKind
    max_trials: int
    seed: int
    objective: Objective
    max_consecutive_failed_trials: int
    directory: str
    pruning: PrunerKind
    pruning_startup_trials: int
    pruning_warmup_epochs: int
    # bayesian only
    num_initial_points: int | None = None
    alpha: float | None = None
    beta: float | None = None
    # hyperband only
    max_epochs: int | None = None
    factor: int | None = None
    hyperband_iterations: int | None = None


@dataclass
class TrackingConfig:
    uri: str
    artifact_root: str
    experiment: str
    log_model: bool
    log_datasets: bool
    log_predictions: bool
    background_artifacts: bool
    register_best: str | None
    system_metrics_s: float
    connect_timeout: int
    outage_budget_s: float
    outage_backoff_max_s: float
    stale_after_s: float
    heartbeat_s: float
    auth_db: str
    auth_default_permission: str
    auth_cache_s: int


@dataclass
class FaithfulnessConfig:
    enabled: bool
    max_examples: int
    max_occlusions: int
    fractions: list[float]
    seed: int


@dataclass
class AttentionConfig:
    enabled: bool
    panel_size: int
    panel_seed: int
    max_tokens: int
    plot_every: int
    batch_size: int
    faithfulness: FaithfulnessConfig


@dataclass
class ServingConfig:
    max_rows: int
    max_chars: int
    max_explain_rows: int


@dataclass
class RaceConfig:  # search.seeds=adaptive: how seeds are raced (pipeline/search/racing.py)
    first: int
    most: int
    budget: int | None
    margin: float  # points (metric units x 100; loss: its own units)
    alpha: float
    futility: float  # conditional power below which a pair stops (0: never)
    top_k: int


@dataclass
class StopConfig:  # pipeline/search/stopping.py
    patience: int | None  # trials in a row without a gain beyond the noise (null: never)


@dataclass
class SearchConfig:
    name: str | None
    resume: bool
    force_new: bool
    verbose: bool
    top_k: int
    evaluate_test: bool
    seeds: Any  # null | a list of seeds | adaptive (search.race)
    race: RaceConfig
    stop: StopConfig
    vary_split: bool
    baseline: str | None
    # Names in pipeline.training.references, each logged as a child run ([]: none).
    reference: list[str]
    keep_compiled: int  # models kept with their traced steps (pipeline/training/compiled.py)


@dataclass
class ClusterConfig:
    mode: ClusterMode
    n_workers: int
    threads_per_worker: int
    pin_cpus: bool
    max_restarts: int
    fork_roles: bool  # roles forked from one preloaded interpreter (pipeline/runtime/zygote.py)
    oracle_host: str
    oracle_port: int
    # Set by the launcher for the processes it starts (or by hand on other hosts).
    role: ClusterRole | None
    worker_id: str | None
    parent_run_id: str | None
    resume: bool  # the chief reloads keras-tuner's oracle state instead of starting afresh


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig
    # Plain dicts, each checked against HyperParamSpec by `validation.py`: OmegaConf
    # cannot assign `+search_space.NAME={type: ...}` to a dict of structured specs.
    search_space: dict[str, Any]
    tuner: TunerConfig
    tracking: TrackingConfig
    train: TrainConfig
    attention: AttentionConfig
    serving: ServingConfig
    search: SearchConfig
    cluster: ClusterConfig
    # Settings of each reference model, by name (pipeline/training/references.py).
    reference: dict[str, Any]
    # Modules imported before the config is checked: they may register pooling variants
    # (pipeline.models.registry) or data loaders (pipeline.data) from outside pipeline/.
    plugins: list[str]


if not OmegaConf.has_resolver("project_root"):
    # ${project_root:} in YAML: paths that work whatever the current directory.
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
