"""What a search does once its trials are over, the same in one process and in a
cluster: the summary table, the trial counts, the best configuration (as the store ranks
it), its score on the held-out test split, the leaderboard, knob importance and the
registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import VALIDATION_METRICS, minimised, search_space_dims
from pipeline.data import PreparedData
from pipeline.errors import SearchError, UploadsKept, fullest
from pipeline.models.registry import variant_of
from pipeline.reporting.figures import comparison_figure
from pipeline.search.driver import weights_path
from pipeline.search.outcome import SearchOutcome, exhausted_space, per_trial, ranked
from pipeline.search.replicates import replicate_data, seeds_of
from pipeline.search.space import build_trial_model, trial_settings
from pipeline.search.stopping import saved_stop_reason
from pipeline.search.tuner import written_folders
from pipeline.tracking import Artifact, Metric, Status, Tag
from pipeline.tracking.protocol import TrackingStore
from pipeline.training.compiled import KEPT, clear_session, set_jit
from pipeline.training.evaluation import evaluate


def best_configuration(
    tracker: TrackingStore, trials: pd.DataFrame, objective: str
) -> tuple[dict, str]:
    """(hyperparameters, trial id) of the best configuration as the summary ranks it
    (mean over seeds, from the store): the same pick in one process and in a cluster."""
    best = ranked(per_trial(trials), objective).iloc[0]
    return tracker.read_trial_record(best["run_id"]).hyperparameters, str(best["trial_id"])


def log_summary(tracker: TrackingStore, rows: list[dict]) -> pd.DataFrame:
    """The trials so far as `search_summary.csv` on the parent run."""
    trials = pd.DataFrame(rows)
    if not trials.empty:
        tracker.log_table_csv(trials, Artifact.SUMMARY)
    return trials


def count_trials(tracker: TrackingStore, trials: pd.DataFrame) -> int:
    done = int((trials["status"] == Status.FINISHED).sum()) if not trials.empty else 0
    tracker.log_metrics({Metric.TRIALS_FINISHED: done, Metric.TRIALS_FAILED: len(trials) - done})
    if done == 0:
        raise SearchError("no trial finished; see the FAILED child runs for their errors")
    return done


def evaluate_on_test(
    cfg: DictConfig, data: PreparedData, values: dict, weights: str
) -> dict[str, float]:
    """The best trial's saved weights scored once on the held-out test split."""
    model_settings, train = trial_settings(cfg, values)
    keep = int(cfg.search.keep_compiled)
    clear_session(keep_kernels=keep > 0)  # the kept models' steps left instantiated
    fresh = build_trial_model(model_settings, train, len(data.vocab), data.n_classes)
    with KEPT.lease(fresh, keep) as model:  # the trial's test step, traced already
        set_jit(model, fresh.jit_compile)  # evaluated as a new model would be (XLA or not)
        model.load_weights(weights)
        metrics, _ = evaluate(
            model,
            data,
            "test",
            train,
            trim_padding=variant_of(model_settings).trims_padding,
            prefix=Metric.TEST_PREFIX,
        )
    return metrics


def finish_search(
    cfg: DictConfig,
    data: PreparedData,
    tracker: TrackingStore,
    name: str,
    parent_id: str,
    trials: pd.DataFrame,
    best_values: dict,
    best_trial_id: str,
    before_registry: Callable[[], None] | None = None,
) -> SearchOutcome:
    """On the (active) parent run: comparison figure, best trial, test metrics
    (`before_registry`: what makes every trial's artifacts present, such as the model the
    registry points at; the search's artifact spool still uploads until then)."""
    finished = trials[trials["status"] == Status.FINISHED]
    tracker.log_figure(comparison_figure(finished, cfg.tuner.objective), Artifact.COMPARISON)
    table = per_trial(trials)
    best_row = table[table["trial_id"] == best_trial_id].iloc[0].to_dict()
    tracker.set_tags({Tag.BEST_RUN_ID: best_row["run_id"], Tag.BEST_TRIAL_ID: best_trial_id})
    tracker.set_tags({f"{Tag.BEST_PREFIX}{k}": v for k, v in best_values.items()})
    tracker.log_metrics({f"{Metric.BEST_VAL_PREFIX}{k}": best_row[k] for k in VALIDATION_METRICS})
    stopped = patience_reason(cfg, name, len(table))
    if stopped:
        tracker.set_tags({Tag.STOPPED: stopped})
    test_metrics: dict[str, float] = {}
    if cfg.search.evaluate_test and len(data.y["test"]):
        weights = weights_path(cfg.tuner.directory, name, best_trial_id)
        _, train = trial_settings(cfg, best_values)
        # The saved weights are the first seed's, trained on that seed's split.
        first = replicate_data(cfg, data, seeds_of(cfg, train)[0])
        test_metrics = evaluate_on_test(cfg, first, best_values, str(weights))
        tracker.log_metrics(test_metrics)
    tracker.log_table(leaderboard_table(table, cfg.tuner.objective), Artifact.LEADERBOARD)
    log_knob_importance(cfg, tracker, table)
    if before_registry is not None:
        before_registry()
    check_uploads_done(cfg, name)  # the registry never points at a model still in a spool
    if cfg.tracking.register_best:
        register_best(cfg, tracker, name, best_row, test_metrics)
    return SearchOutcome(
        search_id=name,
        parent_run_id=parent_id,
        trials=trials,
        best=best_row,
        test_metrics=test_metrics,
        ui_command=tracker.ui_command(),
        exhausted=not stopped and exhausted_space(cfg.tuner.kind, cfg.tuner.max_trials, trials),
        stopped=stopped,
    )


def patience_reason(cfg: DictConfig, name: str, trials: int) -> str | None:
    """Why the oracle stopped before tuner.max_trials (search.stop.patience), or None."""
    if not cfg.search.stop.patience or trials >= cfg.tuner.max_trials:
        return None
    return saved_stop_reason(Path(cfg.tuner.directory) / name)


def check_uploads_done(cfg: DictConfig, name: str) -> None:
    """Every trial's artifacts reached the store, or UploadsKept (exit 75): the spools
    keep them, and the same command uploads them first (then registers)."""
    from pipeline.tracking.spool import ERROR_FILE, pending_jobs

    spools = Path(cfg.tuner.directory) / name / "spool"
    kept = {f: jobs for f in sorted(spools.glob("*")) if (jobs := pending_jobs(f))}
    if kept:
        where = ", ".join(f"{len(jobs)} in {folder}" for folder, jobs in kept.items())
        errors = [
            j / ERROR_FILE for jobs in kept.values() for j in jobs if (j / ERROR_FILE).exists()
        ]
        why = f"; last error: {errors[-1].read_text().strip()}" if errors else ""
        if "No space left" in why and (place := fullest(written_folders(cfg))):
            why = f"; no space left on the device of {place}"
        registry = "; no model was registered" if cfg.tracking.register_best else ""
        raise UploadsKept(
            f"artifacts: {sum(map(len, kept.values()))} upload job(s) did not reach the "
            f"tracking store ({where}){why}{registry}"
        )


def leaderboard_table(table: pd.DataFrame, objective: str) -> pd.DataFrame:
    """One row per configuration, best first, without empty columns (the parent run's
    `leaderboard.json`, shown as a table in the MLflow UI)."""
    board = ranked(table, objective).dropna(axis="columns", how="all")
    return board.drop(columns=[c for c in ("trial_id", "status") if c in board])


def log_knob_importance(cfg: DictConfig, tracker: TrackingStore, table: pd.DataFrame) -> None:
    """Which knobs mattered (Optuna's PED-ANOVA and fANOVA over the finished
    configurations) and the search views, under `search/` on the parent run."""
    from pipeline.reporting.importance import explain_search, importance_line

    objective = cfg.tuner.objective
    importance, figures = explain_search(
        table, search_space_dims(cfg.search_space), objective, minimised(objective)
    )
    tracker.log_dict(
        {
            "evaluators": importance.by_evaluator,
            "note": importance.note,
            "configurations": importance.configurations,
            "views": list(figures),  # in the order drawn (the report's order)
        },
        Artifact.IMPORTANCE,
    )
    for name, figure in figures.items():
        tracker.log_figure(figure, f"{Artifact.SEARCH_VIEWS}/{name}")
    progress.say(importance_line(importance))


def register_best(
    cfg: DictConfig, tracker: TrackingStore, name: str, best_row: dict, test_metrics: dict
) -> str:
    """The best trial's model as a new version of `tracking.register_best`."""
    model = cfg.tracking.register_best
    objective = cfg.tuner.objective
    tags = {
        Tag.SEARCH_ID: name,
        Tag.OBJECTIVE: objective,
        objective: f"{best_row[objective]:.6g}",
        Tag.VARIANT: best_row.get("variant", ""),
        **{k: f"{v:.6g}" for k, v in test_metrics.items()},
    }
    version = tracker.register_model(model, best_row["run_id"], tags)
    tracker.set_tags({Tag.REGISTERED_MODEL: f"{model}/{version}"})
    progress.say(
        f"registered the best trial's model as '{model}' version {version}: raw text in, "
        f"mlflow.pyfunc.load_model('models:/{model}/{version}') (or models:/{model}/latest; "
        f"python -m pipeline.predict models:/{model}/latest --input FILE.csv)"
    )
    return version
