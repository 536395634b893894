"""The report: answer the question from the store, without retraining.

Reads finished trial runs through the tracking package (typed `TrialRun` records),
groups them by configuration, and writes a leaderboard (mean ± std and 95% CI over
seeds), paired comparisons on matched seeds (paired t-test, effect size, a plain
sentence), figures, and a markdown summary into a folder; for a single search the
folder is also logged on its parent run under `report/`. Never imports TensorFlow.
`python -m pipeline.report` is its command line.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import minimised
from pipeline.errors import SearchError
from pipeline.reporting.comparisons import Comparison
from pipeline.reporting.evidence import (
    knob_importance_of,
    load_audit,
    load_predictions,
    load_references,
    load_trials,
    parent_json,
    reference_comparisons,
)
from pipeline.reporting.markdown import (
    answer_lines,
    audit_markdown,
    comparisons_frame,
    context_lines,
    faithfulness_markdown,
    importance_markdown,
    leaderboard_markdown,
    race_markdown,
)
from pipeline.tracking import Artifact, Metric, SearchRun, Status, TrialRun
from pipeline.tracking.connection import refused_permission, write_refused
from pipeline.tracking.protocol import TrackingStore


@dataclass
class Report:
    markdown: str
    out: Path
    parent: SearchRun | None  # the search reported on (None for --all)
    leaderboard: pd.DataFrame  # references included (column `reference`)
    comparisons: list[Comparison]
    against_references: list[Comparison] = field(default_factory=list)
    not_logged: str | None = None  # why the parent run did not get the report's files


@dataclass
class Evidence:
    """What one report weighs: the searches, their finished runs, the leaderboard, the
    paired comparisons (between configurations, and of the best against the references)."""

    title: str
    parent: SearchRun | None
    runs: pd.DataFrame
    objective: str
    baseline: str | None
    board: pd.DataFrame
    found: list[Comparison]
    refs: pd.DataFrame
    versus: list[Comparison]
    missing: dict[str, str]  # run id -> why it has no per-example predictions
    records: list[TrialRun] = field(default_factory=list)  # the finished trial runs


def gather(
    tracker, search: str | None, objective: str | None, baseline: str | None, margin: float,
    adjust: str,
) -> Evidence:  # fmt: skip
    """Read and weigh the runs of `search` (or of every live search)."""
    from pipeline.reporting.comparisons import comparisons
    from pipeline.reporting.statistics import leaderboard

    parent = tracker.find_search(search) if search else None
    if search and parent is None:
        raise SearchError(
            f"no search named '{search}' in experiment '{tracker.experiment_name}' of the store"
        )
    # A search restarted with force_new supersedes its old parent: only live searches count.
    parents = [parent] if parent is not None else tracker.live_searches()
    records = tracker.trial_runs([p.run_id for p in parents], status=Status.FINISHED)
    runs = load_trials(tracker, [p.run_id for p in parents], records)
    if runs.empty:
        what = f"search '{search}'" if search else f"experiment '{tracker.experiment_name}'"
        raise SearchError(f"{what} has no finished trial runs to report on")
    objective = objective or (parent.objective if parent else None) or Metric.VAL_ACCURACY
    if objective not in runs:
        raise SearchError(f"--objective: no metric '{objective}' on these runs")
    baseline = baseline or (parent.baseline if parent else None)
    board = leaderboard(runs, objective)
    missing: dict[str, str] = {}
    predictions = load_predictions(tracker, runs, missing)
    found = comparisons(runs, predictions, objective, baseline, margin, adjust=adjust)
    refs = load_references(tracker, [p.run_id for p in parents])
    versus = (
        reference_comparisons(tracker, board, runs, refs, predictions, objective, margin)
        if not refs.empty
        else []
    )
    if any(p.vary_split for p in parents):
        for c in found:
            if c.examples:
                c.sources = "seeds, validation examples and the train/validation split"
                c.split_varies = True
                c.decide()  # more seeds now shrink the examples' noise too: plan again
    title = f"search `{search}`" if search else f"experiment `{tracker.experiment_name}`"
    return Evidence(
        title, parent, runs, objective, baseline, board, found, refs, versus, missing, records
    )


def ranked_with_references(e: Evidence) -> pd.DataFrame:
    """The leaderboard with the references ranked among the configurations (`reference`)."""
    from pipeline.reporting.statistics import leaderboard

    if e.refs.empty:
        return e.board
    shown = leaderboard(e.refs, e.objective).assign(reference=True)
    ranked = pd.concat([e.board.assign(reference=False), shown], ignore_index=True)
    return ranked.sort_values(
        ["data", f"{e.objective}_mean"], ascending=[True, minimised(e.objective)]
    ).reset_index(drop=True)


def write_figures(tracker, e: Evidence, out: Path):
    """The report's PNGs into `out`; (their names, knob importance or None)."""
    import matplotlib.pyplot as plt

    from pipeline.reporting.figures import forest_figure, replicates_figure, tradeoff_figure

    figures = {"replicates.png": replicates_figure(e.runs, e.board, e.objective)}
    if e.found or e.versus:
        figures["differences.png"] = forest_figure([*e.found, *e.versus], e.objective)
    if "train_seconds_mean" in e.board:
        figures["tradeoff.png"] = tradeoff_figure(e.board, e.objective)
    importance = None
    with tempfile.TemporaryDirectory() as logged:
        if e.parent is not None:  # one search: one search space to weigh its knobs in
            importance, views = knob_importance_of(
                tracker, e.parent, e.objective, e.records, Path(logged)
            )
            figures.update({f"search_{name}": figure for name, figure in views.items()})
        for name, figure in figures.items():
            if isinstance(figure, Path):  # the search's own view, as its finish drew it
                shutil.copyfile(figure, out / name)
                continue
            figure.savefig(out / name, dpi=110)
            plt.close(figure)
    return list(figures), importance


def report_markdown(
    tracker, e: Evidence, ranked: pd.DataFrame, figures: list[str], importance,
    argv: list[str],
) -> str:  # fmt: skip
    parts = [f"# Report: {e.title}", "", "## Answer", ""]
    parts += answer_lines(e.board, e.found, e.objective, e.baseline, e.versus)
    parts += [
        "",
        f"## Leaderboard (by {e.objective}, mean ± std over seeds)",
        "",
        leaderboard_markdown(ranked, e.objective),
        "",
    ]
    parts += faithfulness_markdown(e.board)
    what = f"against `{e.baseline}`" if e.baseline else "every pair"
    parts += [f"## Comparisons ({what}; three verdicts: beats, equivalent, underpowered)", ""]
    if e.found:
        parts += [f"- {c.sentence()}" for c in e.found]
    else:
        parts.append("No pair of configurations shares two or more seeds: set `search.seeds`.")
    if not e.refs.empty:
        parts += ["", "## Against the reference models (the best configuration)", ""]
        parts += [f"- {c.sentence()}" for c in e.versus] or [
            "The best configuration has fewer than two seeds: set `search.seeds` to weigh "
            "it against the references."
        ]
    if e.missing:
        labels = dict(zip(e.runs["run_id"], e.runs["label"], strict=True))
        parts += ["", "## Runs without per-example predictions", ""]
        parts.append(
            "Comparisons that involve these runs rest on their seeds only (paired t-test), "
            "not on the two-level bootstrap:"
        )
        parts += [f"- `{rid}` ({labels.get(rid, '?')}): {why}" for rid, why in e.missing.items()]
    race = parent_json(tracker, e.parent, Artifact.RACE)
    if race is not None:
        parts += ["", "## The race (search.seeds=adaptive: seeds where undecided)", ""]
        parts += race_markdown(race)
    audit = load_audit(tracker, e.parent)
    if audit is not None:
        parts += ["", "## The data (audit before the first trial)", ""] + audit_markdown(audit)
    if importance is not None:
        parts += ["", "## Which knobs matter (Optuna: PED-ANOVA and fANOVA, no retraining)", ""]
        parts += importance_markdown(importance)
    parts += ["", "## Figures", ""] + [f"![{n}]({n})" for n in figures]
    parts += ["", "## Where these numbers come from", ""]
    parts += context_lines(tracker, e.parent, e.runs, argv)
    return "\n".join(parts) + "\n"


def build_report(
    tracker,
    search: str | None,
    objective: str | None,
    out: Path,
    argv: list[str],
    baseline: str | None = None,
    margin: float = 1.0,
    adjust: str = "holm",
) -> Report:
    """Write report.md, CSVs and PNGs into `out` for one search (or every live one)."""
    e = gather(tracker, search, objective, baseline, margin, adjust)
    out.mkdir(parents=True, exist_ok=True)
    e.runs.to_csv(out / "runs.csv", index=False)
    ranked = ranked_with_references(e)
    ranked.to_csv(out / "leaderboard.csv", index=False)
    comparisons_frame([*e.found, *e.versus]).to_csv(out / "comparisons.csv", index=False)
    figures, importance = write_figures(tracker, e, out)
    markdown = report_markdown(tracker, e, ranked, figures, importance, argv)
    (out / "report.md").write_text(markdown)
    report = Report(markdown, out, e.parent, ranked, e.found, e.versus)
    if e.parent is not None:
        try:
            tracker.log_artifacts_to(e.parent.run_id, str(out), Artifact.REPORT_DIR)
        except Exception as err:  # a READ user reads: the files are written, not logged
            if not refused_permission(err):
                raise
            report.not_logged = write_refused(tracker.uri, tracker.experiment_name)
    return report


def run_report(
    tracker: TrackingStore,
    search: str | None = None,
    every_search: bool = False,
    objective: str | None = None,
    out: Path | None = None,
    argv: list[str] | None = None,
    baseline: str | None = None,
    margin: float = 1.0,
    adjust: str = "holm",
) -> Report:
    """The report of `search` (default: the latest), or of every live search, from the
    store `tracker` reads."""
    if every_search:
        search = None
    elif not search:
        latest = tracker.find_search(None)
        if latest is None:
            raise SearchError(f"no search in experiment '{tracker.experiment_name}' yet")
        search = latest.name
    name = search or f"experiment-{tracker.experiment_name}"
    out = out or Path("mlruns") / "reports" / name  # beside the default store, as it is
    # found: relative to where the command runs, never inside the checkout
    return build_report(tracker, search, objective, out, argv or [], baseline, margin, adjust)
