"""Which knobs matter: Optuna's evaluators on synthetic trials (no TensorFlow), and the
search views rendering from a search with failed trials in it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting.importance import explain_search, knob_importance, search_views, study_of

SPACE = {
    "pooling": {"type": "choice", "values": ["attention", "mean", "max"]},
    "units": {"type": "choice", "values": [16, 32, 64]},
    "dropout": {"type": "float", "min": 0.0, "max": 0.3, "step": 0.1},
    "learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "sampling": "log"},
    "embedding_dim": {"type": "fixed", "value": 16},
}


def configurations(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """The score is decided by learning_rate (strongly) and units (a little); dropout and
    pooling do nothing."""
    rng = np.random.default_rng(seed)
    lr = np.exp(rng.uniform(np.log(0.001), np.log(0.01), n))
    units = rng.choice([16, 32, 64], n)
    score = 0.6 + 0.3 * (np.log(lr) - np.log(0.001)) / np.log(10) + units / 2000
    return pd.DataFrame(
        {
            "pooling": rng.choice(["attention", "mean", "max"], n),
            "units": units.astype(float),  # as pandas hands them over
            "dropout": rng.choice([0.0, 0.1, 0.2, 0.3], n),
            "learning_rate": lr,
            "val_accuracy": score + rng.normal(0, 0.002, n),
            "seconds": units / 8 + rng.uniform(0, 1, n),
        }
    )


def test_a_knob_that_decides_the_score_ranks_above_knobs_that_do_nothing():
    study, _ = study_of(configurations(), SPACE, "val_accuracy", minimise=False)
    importance = knob_importance(study)
    assert set(importance.by_evaluator) == {"ped_anova", "fanova"}
    for scores in importance.by_evaluator.values():
        assert max(scores, key=scores.get) == "learning_rate"
        assert scores["learning_rate"] > 3 * max(scores["dropout"], scores["pooling"])
        assert "embedding_dim" not in scores  # fixed: not searched
    assert importance.table()["knob"].iloc[0] == "learning_rate"


def test_too_few_configurations_say_so():
    study, _ = study_of(configurations(3), SPACE, "val_accuracy", minimise=False)
    importance = knob_importance(study)
    assert importance.by_evaluator == {} and "at least 4" in importance.note


def test_three_configurations_get_a_note_and_no_views_four_get_both():
    rows = configurations(4)
    importance, figures = explain_search(rows.head(3), SPACE, "val_accuracy", minimise=False)
    assert "at least 4" in importance.note and figures == {}
    importance, figures = explain_search(rows, SPACE, "val_accuracy", minimise=False)
    assert importance.by_evaluator and "optimization_history.png" in figures
    import matplotlib.pyplot as plt

    for figure in figures.values():
        plt.close(figure)


def test_views_render_with_failed_trials_present():
    rows = configurations(12)
    rows.loc[[2, 5], "val_accuracy"] = np.nan  # failed trials: no score
    rows.loc[[1], "pooling"] = None  # and a row missing a knob
    rows["param_count"] = 1000 + 100 * rows["units"]
    study, paretos = study_of(
        rows, SPACE, "val_accuracy", minimise=False, costs=("seconds", "param_count")
    )
    assert len(study.trials) == 10 and len(paretos["seconds"].trials) == 10
    assert len(paretos["param_count"].trials) == 10
    figures = search_views(study, paretos, knob_importance(study))
    assert {
        "optimization_history.png",
        "slices.png",
        "importance.png",
        "contour.png",
        "pareto_seconds.png",
        "pareto_param_count.png",
    } <= set(figures)
    import matplotlib.pyplot as plt

    for figure in figures.values():
        assert figure.axes
        plt.close(figure)


def test_configurations_that_all_score_the_same_say_so():
    rows = configurations(8)
    rows["val_accuracy"] = 0.5
    study, _ = study_of(rows, SPACE, "val_accuracy", minimise=False)
    importance = knob_importance(study)
    assert importance.by_evaluator == {} and "scored the same" in importance.note
