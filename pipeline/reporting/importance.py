"""Which knobs matter: Optuna's importance evaluators and search views over finished trials.

No retraining and no Optuna sampler: the finished configurations of a search (one row
each, the objective averaged over seeds) become an in-memory study
(`optuna.trial.create_trial` + `Study.add_trials`) with the search space's own
distributions; PED-ANOVA and fANOVA rank the knobs, and `optuna.visualization.matplotlib`
draws the optimisation history, the importances, slices, a contour of the two most
important numeric knobs and the Pareto front of score against wall time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MIN_CONFIGURATIONS = 4  # fewer finished configurations say nothing about importance


@dataclass
class KnobImportance:
    """Importances per evaluator (knob -> share, summing to 1), or why there are none."""

    by_evaluator: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""
    configurations: int = 0  # how many they were estimated over

    def table(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.by_evaluator).fillna(0.0)
        if frame.empty:
            return frame
        first = next(iter(self.by_evaluator))
        return frame.sort_values(first, ascending=False).rename_axis("knob").reset_index()

    def ranked(self, evaluator: str = "ped_anova") -> list[str]:
        scores = self.by_evaluator.get(evaluator) or next(iter(self.by_evaluator.values()), {})
        return sorted(scores, key=lambda k: -scores[k])


def distribution(spec: dict[str, Any]):
    """The Optuna distribution of one search-space entry (None: fixed, not searched)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kind = spec.get("type")
    log = spec.get("sampling") == "log"
    if kind == "choice":
        return CategoricalDistribution(list(spec["values"]))
    if kind == "boolean":
        return CategoricalDistribution([False, True])
    if kind == "int":
        return IntDistribution(int(spec["min"]), int(spec["max"]), log=log, step=1)
    if kind == "float":
        step = None if log else spec.get("step")
        return FloatDistribution(float(spec["min"]), float(spec["max"]), log=log, step=step)
    return None


def _typed(value: Any, dist) -> Any:
    """A table cell as the distribution's own value (pandas turns 16 into 16.0)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
            try:
                if float(choice) == float(value):
                    return choice
            except (TypeError, ValueError):
                continue
        return None
    if isinstance(dist, IntDistribution):
        return int(value)
    return float(value)


# Costs the score is weighed against in Pareto fronts: wall time, parameter count.
PARETO_COSTS = ("seconds", "param_count")


def study_of(
    configurations: pd.DataFrame,
    space: dict[str, dict[str, Any]],
    objective: str,
    minimise: bool,
    costs: Sequence[str] = (),
):
    """(study, {cost: pareto study}): one trial per configuration; each Pareto study has
    a second objective, its cost (e.g. seconds, param_count), minimised."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: d for k, spec in space.items() if (d := distribution(spec)) is not None}
    direction = "minimize" if minimise else "maximize"
    study = optuna.create_study(direction=direction)
    paretos = {c: optuna.create_study(directions=[direction, "minimize"]) for c in costs}
    trials: list = []
    costly: dict[str, list] = {c: [] for c in costs}
    for _, row in configurations.iterrows():
        value = row.get(objective)
        if value is None or not math.isfinite(float(value)):
            continue
        params, used = {}, {}
        for name, dist in dists.items():
            cell = row.get(name)
            if cell is None or (isinstance(cell, float) and math.isnan(cell)):
                continue  # a conditional knob that was not active
            typed = _typed(cell, dist)
            if typed is not None:
                params[name], used[name] = typed, dist
        trials.append(
            optuna.trial.create_trial(params=params, distributions=used, value=float(value))
        )
        for cost in costs:
            spent = row.get(cost)
            if spent is None or not math.isfinite(float(spent)):
                continue
            costly[cost].append(
                optuna.trial.create_trial(
                    params=params, distributions=used, values=[float(value), float(spent)]
                )
            )
    study.add_trials(trials)
    for cost, pareto in paretos.items():
        pareto.add_trials(costly[cost])
    return study, paretos


def knob_importance(study) -> KnobImportance:
    """PED-ANOVA and fANOVA importances (normalised), or a note saying why there are none."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    n = len(study.trials)
    if n < MIN_CONFIGURATIONS:
        return KnobImportance(
            note=f"{n} finished configurations: at least {MIN_CONFIGURATIONS} are needed",
            configurations=n,
        )
    if len({t.value for t in study.trials}) == 1:
        return KnobImportance(note=f"all {n} configurations scored the same", configurations=n)
    result = KnobImportance(configurations=n)
    with warnings.catch_warnings():
        # experimental-API warnings, Optuna's ExperimentalWarning among them (raised when
        # PED-ANOVA is constructed): printed on every search and report otherwise
        warnings.simplefilter("ignore")
        evaluators = {
            "ped_anova": PedAnovaImportanceEvaluator(),
            "fanova": FanovaImportanceEvaluator(seed=0),
        }
        for name, evaluator in evaluators.items():
            try:
                scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
            except (RuntimeError, ValueError) as err:  # e.g. no knob varied
                result.note = f"{name}: {err}"
                continue
            result.by_evaluator[name] = {k: float(v) for k, v in scores.items()}
    return result


def search_views(
    study, paretos: dict[str, Any], importance: KnobImportance, objective: str = "objective"
) -> dict[str, Any]:
    """Matplotlib figures by file name; a view that cannot be drawn is left out."""
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as views

    figures: dict[str, Any] = {}
    numeric = [
        k
        for k in importance.ranked()
        if any(
            k in t.distributions and not isinstance(t.distributions[k], CategoricalDistribution)
            for t in study.trials
        )
    ]
    makers = {
        "optimization_history.png": lambda: views.plot_optimization_history(study),
        "slices.png": lambda: views.plot_slice(study),
    }
    if importance.by_evaluator:
        makers["importance.png"] = lambda: views.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()
        )
    if len(numeric) >= 2:
        makers["contour.png"] = lambda: views.plot_contour(study, params=numeric[:2])
    for cost, pareto in paretos.items():  # is a bigger or slower model worth it?
        if len(pareto.trials) >= 2:
            makers[f"pareto_{cost}.png"] = lambda p=pareto, c=cost: views.plot_pareto_front(
                p, target_names=[objective, c]
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            try:
                axes = make()
            except (RuntimeError, ValueError):
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.get_figure()
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figures[name] = figure
    return figures


def explain_search(
    configurations: pd.DataFrame, space: dict[str, dict[str, Any]], objective: str, minimise: bool
) -> tuple[KnobImportance, dict[str, Any]]:
    """Importances and views of one search's finished configurations; no views below
    MIN_CONFIGURATIONS, where the leaderboard already says all they could."""
    costs = [c for c in PARETO_COSTS if c in configurations]
    study, paretos = study_of(configurations, space, objective, minimise, costs=costs)
    importance = knob_importance(study)
    if len(study.trials) < MIN_CONFIGURATIONS:  # a history or slice of 3 points: the table
        return importance, {}
    return importance, search_views(study, paretos, importance, objective)


def importance_line(importance: KnobImportance, top: int = 4) -> str:
    """`units 0.52, learning_rate 0.31, ...` (PED-ANOVA, else fANOVA), or the note."""
    if not importance.by_evaluator:
        return f"no knob importance ({importance.note})"
    name = "ped_anova" if "ped_anova" in importance.by_evaluator else "fanova"
    scores = importance.by_evaluator[name]
    shown = ", ".join(f"{k} {scores[k]:.2f}" for k in importance.ranked(name)[:top])
    return f"knobs that mattered ({'PED-ANOVA' if name == 'ped_anova' else 'fANOVA'}): {shown}"
