"""Checks a type cannot express: ranges, cross-field rules, the search space's shape.

Enumerations (tuner kinds, objectives, class weights, ...) are enums in the schema and
fail at composition. Options that other packages own (pooling variants and their knobs)
are passed in as `options` by the caller that knows them (`pipeline.models.registry`),
so this package imports nothing from the rest of the project.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.objectives import minimised
from pipeline.config.plain import search_space_dims
from pipeline.config.schema import (
    CONF_DIR,
    JIT_MODES,
    EmbeddingSource,
    HPType,
    HyperParamSpec,
    ModelConfig,
    Sampling,
    TrainConfig,
    TunerKind,
)
from pipeline.config.seeds import listed_seeds, seeds_problem
from pipeline.errors import UserFacingError


class ConfigError(UserFacingError, ValueError):
    """A config value is wrong; the message names the key and the problem."""


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


# Knobs inside a model section that a search dimension may name by their dotted path.
NESTED_KNOBS = {"embeddings.source": [s.value for s in EmbeddingSource]}


def nested_knobs() -> dict[str, list[str]]:
    """NESTED_KNOBS with the named vector sets among the embedding sources."""
    from pipeline.config.vector_sets import source_names

    return {**NESTED_KNOBS, "embeddings.source": source_names()}


def searchable_knobs(plugins: list[str] | None = None) -> set[str]:
    """Every model.* and train.* knob a search dimension may name, with the keys of the
    model sections `plugins` bring (`<variant>.<key>`)."""
    from pipeline.config.sections import plugin_sections

    model = set(ModelConfig.__dataclass_fields__) - {"embeddings"}
    own = {
        f"{section}.{key}"
        for section, schema in plugin_sections(list(plugins or []))["model"].items()
        for key in schema.__dataclass_fields__
    }
    return model | set(NESTED_KNOBS) | own | set(TrainConfig.__dataclass_fields__)


def _check_choices(
    key: str, name: str, values: list[Any], options: Mapping[str, Collection[str]]
) -> None:
    if name in options:
        bad = [v for v in values if v not in options[name]]
        _require(not bad, key, f"unknown {name} {bad}; known {list(options[name])}")


def typed_spec(key: str, spec: Mapping[str, Any]) -> DictConfig:
    """`spec` merged onto the typed `HyperParamSpec`; ConfigError naming the bad field."""
    try:
        return OmegaConf.merge(OmegaConf.structured(HyperParamSpec), dict(spec))
    except OmegaConfBaseException as err:
        field = f"{key}.{err.key}" if getattr(err, "key", None) else key
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"{field}: {reason} (fields: {', '.join(HyperParamSpec.__dataclass_fields__)})"
        ) from None


def validate_search_space(
    dims: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Collection[str]] | None = None,
    plugins: list[str] | None = None,
) -> None:
    """Every dimension is a `HyperParamSpec` (field names, types, enumerations: checked
    by OmegaConf), names a known knob, and has a usable range or choice list."""
    known = searchable_knobs(plugins)
    options = {**nested_knobs(), **(options or {})}
    for name, spec in dims.items():
        key = f"search_space.{name}"
        _require(
            name in known,
            key,
            f"unknown dimension (not a model.* or train.* knob; known: {', '.join(sorted(known))})",
        )
        _require(
            isinstance(spec, Mapping), key, "must be a mapping like {type: choice, values: [...]}"
        )
        typed_spec(key, spec)
        kind = spec["type"]
        if kind == HPType.choice:
            values = spec.get("values")
            _require(bool(values), f"{key}.values", "choice needs a non-empty list of values")
            _check_choices(f"{key}.values", name, list(values), options)
        elif kind in (HPType.int, HPType.float):
            lo, hi = spec.get("min"), spec.get("max")
            _require(lo is not None and hi is not None, key, f"{kind} needs min and max")
            _require(lo <= hi, key, f"min {lo} > max {hi}")
            if spec.get("sampling", Sampling.linear) != Sampling.linear:
                _require(lo > 0, f"{key}.min", "log sampling needs min > 0")
        elif kind == HPType.fixed:
            _require(spec.get("value") is not None, f"{key}.value", "fixed needs a value")
            _check_choices(f"{key}.value", name, [spec["value"]], options)
        for parent in (spec.get("when") or {}).keys():
            _require(parent in dims, f"{key}.when", f"parent dimension '{parent}' is not searched")


def _check_data(d: DictConfig) -> None:
    """Data: ranges, the audit's and near-duplicate settings, the synthetic task."""
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
    nd, au = d.near_duplicates, d.audit
    _require(
        0 < nd.threshold <= 1,
        "data.near_duplicates.threshold",
        f"must be a Jaccard similarity in (0, 1], got {nd.threshold}",
    )
    _require(0 < nd.miss_weight < 1, "data.near_duplicates.miss_weight", "must be in (0, 1)")
    _require(nd.shingle_size >= 1, "data.near_duplicates.shingle_size", "must be >= 1")
    _require(2 <= nd.num_perm <= 1024, "data.near_duplicates.num_perm", "must be in [2, 1024]")
    _require(0 <= au.max_leak < 1, "data.audit.max_leak", f"must be in [0, 1), got {au.max_leak}")
    _require(au.examples >= 0, "data.audit.examples", "must be >= 0")
    _require(au.label_issues_folds >= 2, "data.audit.label_issues_folds", "must be >= 2")
    _require(au.label_issues_c > 0, "data.audit.label_issues_c", "must be > 0")
    s = d.synthetic
    if d.loader == "synthetic" and s is not None:
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


def _check_model(m: DictConfig, options: Mapping[str, Collection[str]]) -> None:
    """Model: sizes, rates, and the knobs a registry names (`options`)."""
    _require(m.units > 0, "model.units", f"must be > 0, got {m.units}")
    _require(m.embedding_dim > 0, "model.embedding_dim", f"must be > 0, got {m.embedding_dim}")
    _require(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _require(
        0 <= m.recurrent_dropout < 1,
        "model.recurrent_dropout",
        f"must be in [0, 1), got {m.recurrent_dropout}",
    )
    _require(
        m.attention_temperature > 0,
        "model.attention_temperature",
        f"must be > 0, got {m.attention_temperature}",
    )
    for knob, allowed in options.items():
        value = m.get(knob)
        _require(
            value is None or value in allowed,
            f"model.{knob}",
            f"'{value}' not in {list(allowed)}",
        )


def _check_tracking(tr: DictConfig) -> None:
    """Tracking: the registry's needs, outage and heartbeat timings."""
    _require(
        not tr.register_best or tr.log_model,
        "tracking.register_best",
        "needs tracking.log_model=true (the best trial's logged model is what gets registered)",
    )
    _require(tr.system_metrics_s >= 0, "tracking.system_metrics_s", "must be >= 0 (0: off)")
    _require(tr.outage_backoff_max_s > 0, "tracking.outage_backoff_max_s", "must be > 0")
    _require(tr.auth_cache_s >= 0, "tracking.auth_cache_s", "must be >= 0")
    for key in ("outage_budget_s", "outage_backoff_max_s", "heartbeat_s", "stale_after_s"):
        value = tr[key]
        _require(math.isfinite(value) and value >= 0, f"tracking.{key}", "must be finite, >= 0")
    _require(
        tr.stale_after_s == 0 or 0 < tr.heartbeat_s < tr.stale_after_s,
        "tracking.heartbeat_s",
        f"must be > 0 and below tracking.stale_after_s ({tr.stale_after_s:g}), or a live run "
        f"would be closed as stale; got {tr.heartbeat_s:g}",
    )


def _check_attention(a: DictConfig) -> None:
    """Attention: the panel, heatmaps and faithfulness settings."""
    _require(a.panel_size >= 1, "attention.panel_size", f"must be >= 1, got {a.panel_size}")
    _require(a.max_tokens >= 1, "attention.max_tokens", f"must be >= 1, got {a.max_tokens}")
    _require(a.plot_every >= 0, "attention.plot_every", f"must be >= 0, got {a.plot_every}")
    _require(a.batch_size >= 1, "attention.batch_size", f"must be >= 1, got {a.batch_size}")
    f = a.faithfulness
    _require(f.max_examples >= 1, "attention.faithfulness.max_examples", "must be >= 1")
    _require(f.max_occlusions >= 1, "attention.faithfulness.max_occlusions", "must be >= 1")
    _require(
        len(f.fractions) > 0 and all(0 < x < 1 for x in f.fractions),
        "attention.faithfulness.fractions",
        f"need shares in (0, 1), got {list(f.fractions)}",
    )


def _check_xla(t: DictConfig) -> None:
    """Train: XLA modes and their measured costs."""
    _require(
        str(t.jit_compile).lower() in JIT_MODES,
        "train.jit_compile",
        f"'{t.jit_compile}' is not one of {', '.join(JIT_MODES)}",
    )
    _require(
        not (str(t.jit_compile).lower() == "true" and t.deterministic),
        "train.jit_compile",
        "true needs train.deterministic=false: TensorFlow's op determinism excludes XLA "
        "(XLA fits measured bit-identical run to run on this CPU anyway)",
    )
    _require(
        t.xla.compile_s_per_shape >= 0 and t.xla.speedup > 0 and t.xla.tokens_per_s > 0,
        "train.xla",
        "compile_s_per_shape >= 0, speedup > 0 and tokens_per_s > 0",
    )
    shards = str(t.xla.shards).strip().lower()
    _require(
        shards == "auto" or (shards.isdigit() and int(shards) >= 1),
        "train.xla.shards",
        f"'{t.xla.shards}' is neither auto nor a whole number >= 1",
    )


def _check_tuner(tu: DictConfig, seeds: list) -> None:
    """Tuner: trials, pruning and Hyperband's settings."""
    _require(tu.max_trials > 0, "tuner.max_trials", f"must be > 0, got {tu.max_trials}")
    _require(
        tu.pruning == "none" or tu.kind != TunerKind.hyperband,
        "tuner.pruning",
        "Hyperband prunes by itself: use tuner.pruning=none with tuner=hyperband",
    )
    _require(
        tu.pruning != "wilcoxon" or len(seeds) >= 3,
        "tuner.pruning",
        "wilcoxon compares configurations seed by seed: it needs search.seeds with 3 or more",
    )
    _require(tu.pruning_startup_trials >= 0, "tuner.pruning_startup_trials", "must be >= 0")
    _require(tu.pruning_warmup_epochs >= 0, "tuner.pruning_warmup_epochs", "must be >= 0")
    if tu.kind == TunerKind.hyperband:
        _require(
            (tu.max_epochs or 0) > 0 and (tu.factor or 0) >= 2,
            "tuner.max_epochs/factor",
            "need > 0 and >= 2",
        )


def _check_seeds(cfg: DictConfig) -> None:
    problem = seeds_problem(cfg)
    _require(problem is None, *(problem or ": ").split(": ", 1))
    patience = cfg.search.stop.patience
    if patience is not None:
        _require(patience >= 1, "search.stop.patience", f"must be >= 1 or null, got {patience}")
        _require(
            not minimised(cfg.tuner.objective),
            "search.stop.patience",
            f"the noise is the standard error of an accuracy-like objective; "
            f"{cfg.tuner.objective} has none here",
        )


def _check_cluster(c: DictConfig) -> None:
    """Cluster: workers, threads, a worker's parent run."""
    _require(c.n_workers >= 0, "cluster.n_workers", f"must be >= 0, got {c.n_workers}")
    _require(c.threads_per_worker >= 0, "cluster.threads_per_worker", "must be >= 0")
    _require(
        c.role not in ("worker", "racer") or bool(c.parent_run_id),
        "cluster.parent_run_id",
        f"a {c.role} needs the parent run id of its search",
    )


def validate(cfg: DictConfig, options: Mapping[str, Collection[str]] | None = None) -> None:
    """Range and cross-field checks; raises ConfigError naming the first bad key.

    `options` maps a model knob to its allowed values (e.g. `pooling` to the registered
    variants); `pipeline.runtime.checks.validate_config` passes the registry's.
    """
    options = options or {}
    check_known_keys(cfg)
    d, t = cfg.data, cfg.train
    _check_data(d)
    _check_model(cfg.model, options)
    _require(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    validate_embeddings(cfg.model, search_space_dims(cfg.search_space))
    _check_tracking(cfg.tracking)
    _require(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _require(t.learning_rate > 0, "train.learning_rate", f"must be > 0, got {t.learning_rate}")
    _require(t.bucketing.n_buckets >= 1, "train.bucketing.n_buckets", "must be >= 1")
    _require(
        t.steps_per_execution >= 1,
        "train.steps_per_execution",
        f"must be >= 1, got {t.steps_per_execution}",
    )
    _check_attention(cfg.attention)
    _check_xla(t)
    _check_seeds(cfg)
    _check_tuner(cfg.tuner, listed_seeds(cfg))
    _check_cluster(cfg.cluster)
    check_search_name(cfg.search.name)
    for key in ("max_rows", "max_chars", "max_explain_rows"):
        _require(cfg.serving[key] >= 1, f"serving.{key}", f"must be >= 1, got {cfg.serving[key]}")
    if d.loader == "csv" and d.get("csv") is not None:
        _require(
            d.csv.text_column != d.csv.label_column,
            "data.csv.label_column",
            f"'{d.csv.label_column}' is the text column too; name the column of the labels",
        )
    seeds = listed_seeds(cfg)
    _require(len(seeds) == len(set(seeds)), "search.seeds", f"repeated seeds in {seeds}")
    _require(
        not (seeds and "seed" in cfg.search_space),
        "search.seeds",
        "search_space.seed is searched too; use one of them",
    )
    validate_search_space(
        search_space_dims(cfg.search_space), options, list(cfg.get("plugins") or [])
    )


# One path component: keras-tuner deletes `tuner.directory/<name>` (overwrite=True), so a
# name must never reach outside that folder ('..', '/', '~', NUL and the like).
SEARCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_search_name(name: Any) -> None:
    """`search.name` is a folder name under `tuner.directory`, nothing more."""
    if name is None:
        return
    _require(
        isinstance(name, str) and SEARCH_NAME.fullmatch(name) is not None,
        "search.name",
        f"{str(name)[:200]!r} is not a plain name: use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (it names a folder under tuner.directory)",
    )


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys the schema does not know. Hydra's `+key=value` adds a key even to a
    typed section, where it would be silently ignored (`+train.epocs=10`); a plugin's
    own section is typed by its dataclass, so its keys are known."""
    unknown = _first_unknown_key(cfg, "")
    if unknown is not None:
        prefix, key, known = unknown
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
        if not prefix:  # a preset's group, misspelt: `+experimnet=quick`
            presets = [d.name for d in CONF_DIR.iterdir() if d.is_dir() and d.name not in known]
            group = difflib.get_close_matches(key, presets, n=1)
            if group and not OmegaConf.is_config(value := cfg.get(key)):
                hint = f"; did you mean '+{group[0]}={value}'?"
        raise ConfigError(f"{prefix}{key}: no such key in the config schema{hint}")


def _first_unknown_key(node: DictConfig, prefix: str) -> tuple[str, str, list[str]] | None:
    """(prefix, key, the keys its section knows) of the first unknown key, or None."""
    kind = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(kind):
        return None  # a plain mapping (search_space, reference): checked where it is read
    known = [f.name for f in dataclasses.fields(kind)]
    for key in node.keys():
        if key not in known:
            return prefix, str(key), known
        child = node._get_node(key)  # unresolved: a missing `???` value is no error here
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            if (found := _first_unknown_key(child, f"{prefix}{key}.")) is not None:
                return found
    return None


def embedding_sources(source: Any, dims: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every embedding source a trial of this search can use: the searched values of
    `embeddings.source`, else the fixed `model.embeddings.source`."""
    spec = dims.get("embeddings.source")
    if spec is None:
        return [str(source)]
    if spec.get("type") == HPType.fixed:
        return [str(spec.get("value"))]
    return [str(v) for v in dict.fromkeys(spec.get("values") or [])]


def validate_embeddings(m: DictConfig, dims: Mapping[str, Mapping[str, Any]]) -> None:
    """`model.embeddings`: what each source needs, checked before anything is read."""
    from pipeline.config.vector_sets import named_sets

    e = m.embeddings
    sources = set(embedding_sources(e.source, dims))
    known = nested_knobs()["embeddings.source"]
    if "embeddings.source" not in dims:  # searched values: the search space's own check
        _require(e.source in known, "model.embeddings.source",
                 f"unknown source {e.source!r} (known: {', '.join(known)})")  # fmt: skip
    if EmbeddingSource.file in sources:
        _require(bool(e.path), "model.embeddings.path", "needed with source=file")
    fixed_size = sources & ({EmbeddingSource.file.value} | set(named_sets()))
    _require(
        not fixed_size or not sources <= fixed_size or "embedding_dim" not in dims,
        "search_space.embedding_dim",
        f"the vectors ({', '.join(sorted(fixed_size))}) fix the embedding size; drop the "
        "dimension (~search_space.embedding_dim)",
    )
    if EmbeddingSource.trained in sources:
        _require(e.epochs >= 1, "model.embeddings.epochs", f"must be >= 1, got {e.epochs}")
        _require(e.window >= 1, "model.embeddings.window", f"must be >= 1, got {e.window}")
        _require(e.min_count >= 1, "model.embeddings.min_count", "must be >= 1")
    _require(e.dim is None or e.dim > 0, "model.embeddings.dim", f"must be > 0, got {e.dim}")
