"""What a report reads from the store: the finished trial runs of one search or of every
live one (typed `TrialRun` records as a frame), the references' runs, per-example
predictions, the data audit, and the inputs of knob importance. Never imports
TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import minimised
from pipeline.reporting.comparisons import Comparison
from pipeline.tracking import Artifact, Metric, SearchRun, Status, TrialRun


def _hp_text(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.3g}" if not number.is_integer() else str(int(number))


def runs_frame(records: list[TrialRun], **columns: list) -> pd.DataFrame:
    """One row per run: its id, search, data, seed and start, the given columns, then
    every metric it logged."""
    frame = pd.DataFrame(
        {
            "run_id": [r.run_id for r in records],
            "search": [r.search_id for r in records],
            "data": [r.data or r.data_fingerprint or "data" for r in records],
            "seed": pd.to_numeric(pd.Series([r.seed for r in records]), errors="coerce"),
            "start_time": [r.start_time for r in records],
            **columns,
        }
    )
    return pd.concat([frame, pd.DataFrame([r.metrics for r in records])], axis=1)


def load_trials(
    tracker, parent_ids: list[str], records: list[TrialRun] | None = None
) -> pd.DataFrame:
    """Finished trial runs (one row per seed) of these searches (parent runs), with
    `data`, `group`, `label`, `seed` and metric columns (`records`: those runs, read
    already)."""
    from pipeline.models.registry import canonical_label, label_knobs

    if records is None:
        records = tracker.trial_runs(parent_ids, status=Status.FINISHED)
    if not records:
        return pd.DataFrame()
    runs = runs_frame(
        records,
        group=[r.group or r.config_hash for r in records],
        variant=[canonical_label(r.variant) if r.variant else None for r in records],
        pruned=[r.pruned for r in records],
        vectors=[r.params.get("model.embeddings.source", "random") for r in records],
    )
    params = pd.DataFrame([r.hyperparameters for r in records])
    in_label = label_knobs()
    varying = [
        c
        for c in sorted(params.columns)
        if c not in in_label and not c.startswith("tuner/") and params[c].nunique(dropna=True) > 1
    ]
    labels = runs["variant"].fillna("?").astype(str)
    for name in varying:
        labels = labels + params[name].map(
            lambda v, n=name: "" if pd.isna(v) else f" {n}={_hp_text(v)}"
        )
    runs["label"] = labels
    # Two configurations that differ only outside the logged hyperparameters (e.g. two
    # searches with different training settings) must not merge into one row.
    per_label = runs.groupby(["data", "label"])["group"].transform("nunique")
    clash = per_label > 1
    runs.loc[clash, "label"] = (
        runs.loc[clash, "label"] + " [" + runs.loc[clash, "group"].str[:6] + "]"
    )
    # A seed re-run of the same configuration: keep the latest.
    runs = runs.sort_values("start_time").drop_duplicates(["data", "group", "seed"], keep="last")
    return runs.reset_index(drop=True)


REFERENCE_MARK = " (reference)"  # how a reference model is labelled in tables


def load_references(tracker, parent_ids: list[str]) -> pd.DataFrame:
    """Finished reference runs (`search.reference`) of these searches: `data`, `label`
    (`tfidf-lr (reference)`), `seed` (the split's, with vary_split; else empty) and
    their metrics."""
    from pipeline.tracking import Kind

    records: list[TrialRun] = tracker.trial_runs(
        parent_ids, status=Status.FINISHED, kind=Kind.REFERENCE
    )
    if not records:
        return pd.DataFrame()
    refs = runs_frame(
        records,
        group=[f"reference:{r.variant}" for r in records],
        variant=[r.variant for r in records],
        label=[f"{r.variant}{REFERENCE_MARK}" for r in records],
    )
    keep = refs.sort_values("start_time").drop_duplicates(["data", "label", "seed"], keep="last")
    return keep.reset_index(drop=True)


def reference_comparisons(
    tracker,
    board: pd.DataFrame,
    runs: pd.DataFrame,
    refs: pd.DataFrame,
    predictions: dict,
    objective: str,
    margin: float,
) -> list[Comparison]:
    """The leader of each data set against each of its references."""
    from pipeline.reporting.comparisons import against_reference

    found = []
    for (data, label), frame in refs.groupby(["data", "label"], sort=False):
        rows = board[board["data"] == data]
        if rows.empty or objective not in frame:
            continue
        leader = rows.iloc[0]["configuration"]
        theirs = {}
        for row in frame.itertuples():
            p = tracker.read_predictions(row.run_id)
            if p is not None:
                theirs[None if pd.isna(row.seed) else int(row.seed)] = p
        c = against_reference(
            str(data),
            leader,
            str(label),
            runs,
            float(frame[objective].mean()),
            predictions.get((data, leader), {}),
            theirs,
            objective,
            margin,
        )
        if c is not None:
            found.append(c)
    return found


def load_predictions(
    tracker, runs: pd.DataFrame, missing: dict[str, str] | None = None
) -> dict[tuple[str, str], dict[int, object]]:
    """Each run's logged validation predictions: (data, configuration) -> seed -> them.
    Runs without readable ones go into `missing` (run id -> why), which the report
    lists: their comparisons fall back to seeds only, and the report says so. A refused
    permission or an outage is an error, never "no predictions"."""
    from pipeline.tracking.store import CorruptArtifact

    found: dict[tuple[str, str], dict[int, object]] = {}
    for row in runs.itertuples():
        if pd.isna(row.seed):
            continue
        try:
            predictions = tracker.read_predictions(row.run_id)
        except CorruptArtifact as err:
            if missing is not None:
                missing[row.run_id] = str(err).split(": ", 1)[-1]
            continue
        if predictions is None:
            if missing is not None:
                missing[row.run_id] = "logged no predictions (tracking.log_predictions=false?)"
            continue
        found.setdefault((row.data, row.label), {})[int(row.seed)] = predictions
    return found


def load_audit(tracker, parent: SearchRun | None) -> dict | None:
    """The parent's data_audit.json (None for every-search reports and for searches
    logged before the audit existed)."""
    return parent_json(tracker, parent, Artifact.DATA_AUDIT)


def parent_json(tracker, parent: SearchRun | None, artifact: str) -> dict | None:
    """A JSON file of the parent run (None: no single search, or the search has none)."""
    import json

    from pipeline.tracking import TrackingError

    if parent is None:
        return None
    try:
        return json.loads(tracker.read_text(parent.run_id, artifact))
    except TrackingError:
        return None


def configuration_table(records: list[TrialRun], objective: str) -> pd.DataFrame:
    """One row per configuration: its hyperparameters, the objective averaged over seeds
    and the wall time summed (what Optuna's importance and views read)."""
    rows = []
    for r in records:
        if objective not in r.metrics:
            continue
        rows.append(
            {
                "group": r.group or r.config_hash or r.run_id,
                **r.hyperparameters,
                objective: r.metrics[objective],
                "seconds": r.seconds,
                Metric.PARAM_COUNT: r.metrics.get(Metric.PARAM_COUNT),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    from pipeline.reporting.statistics import per_configuration

    table = per_configuration(frame, "group", mean=[objective], total=["seconds"])
    return table.drop(columns=["group", "seeds"])


def knob_importance_of(tracker, parent, objective: str, records: list[TrialRun], folder: Path):
    """(KnobImportance, views) of one search from its finished trial runs: what its finish
    logged on the parent run (importance.json, the views' PNGs downloaded into `folder`)
    when it weighed as many configurations as the runs hold now, else computed again (a
    search still running, or resumed since)."""
    import json

    import numpy as np

    from pipeline.reporting.importance import KnobImportance, explain_search

    table = configuration_table(records, objective)
    configurations = int(np.isfinite(table[objective]).sum()) if objective in table else 0
    logged = parent_json(tracker, parent, Artifact.IMPORTANCE)
    if logged is not None and logged.get("configurations") == configurations:
        importance = KnobImportance(logged["evaluators"], logged["note"], configurations)
        views = Path(tracker.download_artifact(parent.run_id, Artifact.SEARCH_VIEWS, str(folder)))
        order = logged.get("views") or sorted(p.name for p in views.glob("*.png"))
        drawn = [name for name in order if (views / name).is_file()]
        return importance, {name: views / name for name in drawn}
    space = json.loads(tracker.read_text(parent.run_id, Artifact.SEARCH_SPACE))
    return explain_search(table, space, objective, minimised(objective))
