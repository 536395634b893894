"""Stop hopeless trials early: Optuna's pruners, asked from a Keras callback.

keras-tuner only stops trials early inside Hyperband. Optuna's pruners decide from the
intermediate values of other trials, so an in-memory Optuna study mirrors this search's
per-epoch validation curves: each replicate (configuration x seed) is an Optuna trial
that reports its objective after every epoch, and `PruningCallback` stops training when
the pruner says so. The mirror is rebuilt from the MLflow store (the curves every child
run logged with step = epoch), so a resumed search and every cluster worker prune
against all finished trials, whoever ran them.

`tuner.pruning`: `none`, `median` (MedianPruner), `successive_halving`
(SuccessiveHalvingPruner) over epochs; `wilcoxon` (WilcoxonPruner) over seeds: a
configuration's remaining seeds are skipped once its per-seed scores are significantly
worse than the best configuration's on the same seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras

from pipeline.config import PrunerKind, minimised

PrunerFactory = Callable[[int, int], Any]  # (startup trials, warm-up epochs) -> pruner
PRUNERS: dict[PrunerKind, PrunerFactory] = {}  # one per PrunerKind (the schema's names)


def register_pruner(kind: PrunerKind) -> Callable[[PrunerFactory], PrunerFactory]:
    def deco(factory: PrunerFactory) -> PrunerFactory:
        PRUNERS[kind] = factory
        return factory

    return deco


@register_pruner(PrunerKind.median)
def _median(startup_trials: int, warmup_epochs: int):
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
    )


@register_pruner(PrunerKind.successive_halving)
def _successive_halving(startup_trials: int, warmup_epochs: int):
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs))


@register_pruner(PrunerKind.wilcoxon)
def _wilcoxon(startup_trials: int, warmup_epochs: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int):
    """The Optuna pruner of `tuner.pruning` (None for `none`)."""
    kind = PrunerKind(kind)
    if kind == PrunerKind.none:
        return None
    return PRUNERS[kind](startup_trials, warmup_epochs)


def make_mirror(cfg) -> PruningMirror | None:
    """The search's pruning mirror (None with `tuner.pruning=none`)."""
    t = cfg.tuner
    kind = t.pruning
    pruner = make_pruner(kind, t.pruning_startup_trials, t.pruning_warmup_epochs)
    if pruner is None:
        return None
    return PruningMirror(pruner, t.objective, per_seed=kind == "wilcoxon")


@dataclass
class Curve:
    """One finished replicate as the mirror knows it."""

    key: str  # replicate key (configuration x seed) or group (for wilcoxon)
    values: dict[int, float]  # step (epoch, or seed for wilcoxon) -> objective
    final: float
    pruned: bool = False


@dataclass
class PruningMirror:
    """An Optuna study holding the search's validation curves, asked whether to prune."""

    pruner: Any
    objective: str
    per_seed: bool = False  # wilcoxon: steps are seeds, one Optuna trial per configuration
    known: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "minimize" if minimised(self.objective) else "maximize"
        self.study = optuna.create_study(direction=direction, pruner=self.pruner)

    def add(self, curves: Iterable[Curve]) -> int:
        """Finished replicates (from this process or the store), each once."""
        import optuna
        from optuna.trial import TrialState

        added = []
        for c in curves:
            if c.key in self.known or not c.values or not math.isfinite(c.final):
                continue
            self.known.add(c.key)
            state = TrialState.PRUNED if c.pruned else TrialState.COMPLETE
            added.append(
                optuna.trial.create_trial(
                    state=state,
                    value=None if c.pruned else c.final,
                    intermediate_values=dict(c.values),
                )
            )
        if added:
            self.study.add_trials(added)
        return len(added)

    def start(self, key: str):
        """A running Optuna trial for one replicate (or configuration, per seed)."""
        trial = self.study.ask()
        trial.set_user_attr("key", key)
        return trial

    def report(self, trial, step: int, value: float) -> bool:
        """Report the objective at `step`; True when the pruner says stop."""
        if not math.isfinite(value):
            return False
        trial.report(float(value), step)
        return bool(trial.should_prune())

    def finish(self, trial, value: float | None, pruned: bool) -> None:
        """Close the running trial (and remember its key so the store does not re-add it)."""
        from optuna.trial import TrialState

        self.known.add(trial.user_attrs["key"])
        if pruned:
            self.study.tell(trial, state=TrialState.PRUNED)
        elif value is None or not math.isfinite(value):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, float(value))


def curves_from_runs(runs, history_of, objective: str, per_seed: bool) -> list[Curve]:
    """Curves of finished trial runs (`TrialRun` records): per epoch from their metric
    history (`history_of(run_id) -> {step: value}`), or per seed grouped by configuration."""
    from pipeline.tracking import Metric

    finished = [r for r in runs if objective in r.metrics]
    if per_seed:
        by_group: dict[str, dict[int, float]] = {}
        for r in finished:
            if r.seed is not None:
                by_group.setdefault(r.group or r.config_hash, {})[int(r.seed)] = r.metrics[
                    objective
                ]
        return [
            Curve(f"group:{g}", seeds, sum(seeds.values()) / len(seeds))
            for g, seeds in by_group.items()
        ]
    curves = []
    for r in finished:
        epochs = int(r.metrics.get(Metric.EPOCHS_TRAINED, 0))
        values = {s: v for s, v in history_of(r.run_id).items() if s < epochs}
        curves.append(Curve(r.config_hash or r.run_id, values, r.metrics[objective], r.pruned))
    return curves


class PruningCallback(keras.callbacks.Callback):
    """After each epoch, report the objective to the mirror; stop training when pruned.

    Keras then restores the best weights as usual (early stopping's restore), so a pruned
    trial is scored, logged and told to keras-tuner like any other.
    """

    def __init__(self, mirror: PruningMirror, key: str):
        super().__init__()
        self.mirror, self.key = mirror, key
        self.trial = mirror.start(key)
        self.pruned_at: int | None = None  # 0-based epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        value = (logs or {}).get(self.mirror.objective)
        pruned = value is not None and self.mirror.report(self.trial, epoch, value)
        # A "prune" after the last epoch stops nothing: the trial trained in full.
        if pruned and epoch + 1 < int(self.params.get("epochs") or 0):
            self.pruned_at = epoch
            self.model.stop_training = True

    def close(self, final: float | None) -> None:
        self.mirror.finish(self.trial, final, self.pruned_at is not None)
