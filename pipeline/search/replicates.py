"""Seeds as replicates: which seeds a configuration trains with, and how its runs are
identified (`group`: the configuration whatever the seed; `config_hash`: one replicate)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.config import VALIDATION_METRICS, config_hash, to_plain, typed_data
from pipeline.config.schema import TrainConfig
from pipeline.config.seeds import ADAPTIVE
from pipeline.data import PreparedData, prepare


def seeds_of(cfg: DictConfig, train: TrainConfig) -> list[int]:
    """The seeds a configuration first trains with: `search.seeds`, the race's first ones
    (`search.seeds=adaptive`: more follow where a verdict is undecided), or the one
    `train.seed` when no replicates are asked for."""
    if adaptive(cfg):
        return list(range(int(cfg.search.race.first)))
    return [int(s) for s in (cfg.search.seeds or [train.seed])]


def adaptive(cfg: DictConfig) -> bool:
    return cfg.search.seeds == ADAPTIVE


def replicated(cfg: DictConfig) -> bool:
    return adaptive(cfg) or (bool(cfg.search.seeds) and len(cfg.search.seeds) > 1)


def group_hash(model: dict[str, Any], train: TrainConfig, fingerprint: str) -> str:
    """The configuration, whatever the seed: every model/train setting after the trial's
    values (so searches with other epochs or batch sizes never share a group)."""
    return config_hash(
        {
            "model": model,
            "train": {k: v for k, v in to_plain(train).items() if k != "seed"},
            "data": fingerprint,
        }
    )


def replicate_key(values: dict[str, Any], seed: int, fingerprint: str) -> str:
    """One replicate: hyperparameters, seed and data (a trial is never logged twice)."""
    return config_hash({"hp": values, "seed": seed, "data": fingerprint})


def replicate_data(cfg: DictConfig, base: PreparedData, seed: int) -> PreparedData:
    """The data a replicate trains on: the search's, or with `search.vary_split` the same
    data split anew by the seed (its own vocabulary and fingerprint)."""
    if not cfg.search.vary_split or seed == cfg.data.split_seed:
        return base
    key = (base.fingerprint, seed)
    if key not in _SPLITS:
        if any(k[0] != base.fingerprint for k in _SPLITS):
            _SPLITS.clear()  # another search's splits: keep memory flat
        _SPLITS[key] = prepare(replace(typed_data(cfg.data), split_seed=seed))
    return _SPLITS[key]


_SPLITS: dict[tuple[str, int], PreparedData] = {}


def split_seed_of(cfg: DictConfig, seed: int) -> int | None:
    """What a trial record says about its split (None: the data's own)."""
    return seed if cfg.search.vary_split else None


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """What the tuner ranks: the mean of each validation metric over the seeds."""
    return {k: float(np.mean([s[k] for s in scores])) for k in VALIDATION_METRICS}
