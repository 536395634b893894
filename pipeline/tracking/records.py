"""Typed records that readers get from the tracking store (never MLflow column strings).

`SearchRun` and `TrialRun` are what a search's parent and trial runs hold;
`TrialRecord` is a trial's `trial.json`, written and read by this package for the
tuner and `pipeline.reproduce` alike. Plain Python: no MLflow import here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UserFacingError


@dataclass(frozen=True)
class SearchRun:
    """A search's parent run."""

    run_id: str
    name: str  # search_id
    status: str
    start_time: int  # ms since the epoch
    comparable_hash: str | None = None
    objective: str | None = None
    command: str | None = None
    superseded: bool = False
    best_run_id: str | None = None
    baseline: str | None = None  # search.baseline: what the report compares against
    vary_split: bool = False  # search.vary_split: each seed redrew the split
    versions: dict[str, str] = field(default_factory=dict)  # package -> version
    machine: dict[str, str] = field(default_factory=dict)  # platform, cpus, python
    git_commit: str | None = None


@dataclass(frozen=True)
class TrialRun:
    """A trial (or reproduce) run: tags as typed fields, params and metrics as dicts."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    start_time: int  # ms since the epoch
    end_time: int | None
    parent_id: str | None = None
    kind: str | None = None
    search_id: str | None = None
    trial_id: str | None = None
    trial_number: int | None = None
    config_hash: str | None = None
    group: str | None = None
    seed: int | None = None
    variant: str | None = None
    data: str | None = None
    data_fingerprint: str | None = None
    worker: str | None = None
    interrupted: bool = False
    pruned: bool = False  # stopped early by the pruner
    pruned_epoch: int | None = None  # ... after this epoch (1-based)
    xla: bool = False  # the fit ran under XLA (train.jit_compile)
    xla_shards: int = 1  # ... over this many blocks of each batch (training.sharded)
    error: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Dotted param keys the tuner searched (tag `searched`); None: a run logged before
    # every run carried its full configuration, whose params are its hyperparameters.
    searched: tuple[str, ...] | None = None

    @property
    def hyperparameters(self) -> dict[str, str]:
        """What the tuner chose for this run, by knob name (`units`, `pooling`, ...), plus
        keras-tuner's own `tuner/*` values: the columns a summary or report shows."""
        if self.searched is None:
            return dict(self.params)
        # model.units -> units; model.embeddings.source -> embeddings.source
        chosen = {k.split(".", 1)[-1]: self.params[k] for k in self.searched if k in self.params}
        chosen.update({k: v for k, v in self.params.items() if k.startswith("tuner/")})
        return chosen

    @property
    def seconds(self) -> float:
        return round(((self.end_time or 0) - self.start_time) / 1000, 2)


class StaleRecordError(UserFacingError, ValueError):
    """A logged record uses a layout this version can no longer act on."""


@dataclass(frozen=True)
class TrialRecord:
    """One replicate's `trial.json`: enough to train it again."""

    hyperparameters: dict[str, Any]
    seed: int
    data_fingerprint: str
    group: str | None = None
    # The train/validation split this replicate used, when `search.vary_split` redrew it
    # (None: the data's own `split_seed`).
    split_seed: int | None = None
    # The aligned word vectors' fingerprint (`pipeline.data.vectors`); None: random start.
    vectors: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrialRecord:
        # Runs logged before `tuner.executions_per_trial` was removed carry it (always 1
        # unless set): several executions averaged in one run cannot be retrained alike.
        executions = int(raw.get("executions_per_trial", 1))
        if executions != 1:
            raise StaleRecordError(
                f"trained with tuner.executions_per_trial={executions}, which no longer "
                "exists (search.seeds replaces it); it cannot be retrained the same way"
            )
        split = raw.get("split_seed")
        return cls(
            hyperparameters=dict(raw["hyperparameters"]),
            seed=int(raw["seed"]),
            data_fingerprint=str(raw["data_fingerprint"]),
            group=raw.get("group"),
            split_seed=None if split is None else int(split),
            vectors=raw.get("vectors"),
        )


@dataclass(frozen=True)
class Predictions:
    """A trial's validation predictions (`predictions/val.npz`): per-example evidence."""

    index: np.ndarray  # example ids in the data set (stable across splits)
    y: np.ndarray  # true class per example
    probs: np.ndarray  # (examples, classes) from the model the metrics score
