"""One replicate, one unit: a frozen `TrialSpec` (built once from the tuner's values, or
from what a logged run recorded) and the `TrialRunner` that trains and logs it.

The tuner and `pipeline.reproduce` both run a replicate through `TrialRunner.run`: its
run opened, its inputs logged (params, `trial.json`), the model built on the replicate's
seed (a kept compiled model leased for it, `training.compiled`), trained, scored and
logged by `pipeline.search.trial`. What differs (the tuner's summary row, pruning and
weights; the reproduction's config) is given as `opened` and `done`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import keras
from omegaconf import DictConfig

from pipeline.config.schema import TrainConfig
from pipeline.data import PreparedData
from pipeline.search.space import build_trial_model
from pipeline.search.trial import TrainedTrial, TrialLogging, log_trial_inputs, train_and_log
from pipeline.tracking import TrialRecord
from pipeline.tracking.protocol import TrackingStore
from pipeline.training.compiled import KEPT, start_trial


def _frozen(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(
        {k: _frozen(v) if isinstance(v, Mapping) else v for k, v in settings.items()}
    )


def thawed(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, writable copy of frozen settings (for a library that wants a dict)."""
    return {k: thawed(v) if isinstance(v, Mapping) else v for k, v in settings.items()}


@dataclass(frozen=True)
class TrialSpec:
    """Everything one replicate trains from: the tuner's values, the model and training
    settings they give, the seed, the data (the replicate's own split with
    `search.vary_split`) and the word vectors its embedding starts from (None: random)."""

    values: Mapping[str, Any]
    model: Mapping[str, Any]
    train: TrainConfig  # `seed` included
    data: PreparedData
    vectors: Any = None  # a `VectorTable`
    split_seed: int | None = None
    group: str | None = None  # the configuration whatever the seed (None: a reproduction)

    @classmethod
    def of(
        cls,
        values: Mapping[str, Any],
        model: Mapping[str, Any],
        train: TrainConfig,
        seed: int,
        data: PreparedData,
        **rest: Any,
    ) -> TrialSpec:
        return cls(_frozen(values), _frozen(model), replace(train, seed=seed), data, **rest)

    @property
    def seed(self) -> int:
        return int(self.train.seed)

    def record(self) -> TrialRecord:
        """The replicate's `trial.json`."""
        return TrialRecord(
            thawed(self.values),
            self.seed,
            self.data.fingerprint,
            self.group,
            self.split_seed,
            None if self.vectors is None else self.vectors.fingerprint,
        )

    def build(self) -> keras.Model:
        data = self.data
        return build_trial_model(
            thawed(self.model), self.train, len(data.vocab), data.n_classes, self.vectors
        )


class TrialRunner:
    """Trains and logs replicates on one store (`logging_for`: the trial logging of a
    replicate's data, its heatmap panel and spool)."""

    def __init__(
        self,
        cfg: DictConfig,
        tracker: TrackingStore,
        logging_for: Callable[[PreparedData], TrialLogging],
    ):
        self.cfg, self.tracker, self.logging_for = cfg, tracker, logging_for

    def run(
        self,
        spec: TrialSpec,
        name: str,
        tags: dict[str, Any],
        label: str,
        *,
        nested: bool = True,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        opened: Callable[[str], None] | None = None,
        done: Callable[[TrainedTrial], None] | None = None,
    ) -> dict[str, float]:
        """The replicate's run: opened (`opened(run_id)`), inputs logged, trained and
        logged; `done(trained)` while its model is still leased. Its final metrics."""
        with self.tracker.run(name, tags=tags, nested=nested, system_metrics=nested) as run:
            if opened is not None:
                opened(run.info.run_id)
            log_trial_inputs(self.tracker, self.cfg, spec.record(), thawed(spec.model), spec.train)
            with self.trained(spec, label, callbacks) as trained:
                if done is not None:
                    done(trained)
                return trained.metrics

    @contextmanager
    def trained(
        self, spec: TrialSpec, label: str, callbacks: Sequence[keras.callbacks.Callback] = ()
    ) -> Iterator[TrainedTrial]:
        """The model built on the replicate's seed (Keras' state cleared first, so the
        same weights follow), trained and logged on the active run."""
        keep = int(self.cfg.search.keep_compiled)
        start_trial(spec.seed, keep_kernels=keep > 0)  # clear_session + set_random_seed
        with KEPT.lease(spec.build(), keep) as model:
            yield train_and_log(
                self.logging_for(spec.data),
                thawed(spec.model),
                spec.train,
                model,
                label,
                extra_callbacks=callbacks,
            )
