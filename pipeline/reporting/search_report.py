"""The report: answer the question from the store, without retraining.

Reads finished trial runs through the tracking package (typed `TrialRun` records),
groups them by configuration, and writes a leaderboard (mean ± std and 95% CI over
seeds), paired comparisons on matched seeds (paired t-test, effect size, a plain
sentence), figures, and a markdown summary into a folder; for a single search the
folder is also logged on its parent run under `report/`. Never imports TensorFlow.
`python -m pipeline.report` is its command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from pipeline.config import minimised
from pipeline.errors import SearchError
from pipeline.reporting.comparisons import Comparison
from pipeline.tracking import Artifact, Metric, SearchRun, Status, TrialRun
from pipeline.tracking.connection import refused_permission, write_refused

COLUMNS = {  # leaderboard metric -> markdown header
    Metric.VAL_ACCURACY: "val accuracy",
    Metric.VAL_MACRO_F1: "val macro-F1",
    Metric.VAL_LOSS: "val loss",
    Metric.ATTENTION_ON_KEYS: "attention on keys",
    Metric.ATTENTION_ENTROPY: "attention entropy",
    Metric.TRAIN_SECONDS: "train s",
    Metric.PARAM_COUNT: "params",
}


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


def load_trials(tracker, parent_ids: list[str]) -> pd.DataFrame:
    """Finished trial runs (one row per seed) of these searches (parent runs), with
    `data`, `group`, `label`, `seed` and metric columns."""
    from pipeline.models.registry import canonical_label, label_knobs

    records: list[TrialRun] = tracker.trial_runs(parent_ids, status=Status.FINISHED)
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


def _mean_std(row: pd.Series, metric: str, digits: int | None = None) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "-"
    if metric == Metric.PARAM_COUNT:
        return f"{mean:,.0f}"
    if digits is None:
        digits = 1 if metric == Metric.TRAIN_SECONDS else 4
    spread = "" if std is None or pd.isna(std) else f" ± {std:.{digits}f}"
    return f"{mean:.{digits}f}{spread}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def leaderboard_markdown(board: pd.DataFrame, objective: str) -> str:
    metrics = [m for m in COLUMNS if f"{m}_mean" in board]
    several_data = board["data"].nunique() > 1
    pruned = "pruned" in board and board["pruned"].sum() > 0
    header = (["data"] if several_data else []) + ["configuration", "seeds"]
    header += [COLUMNS[m] + (" (objective)" if m == objective else "") for m in metrics]
    header.insert(header.index("seeds") + 2, f"{objective} 95% CI")
    if pruned:
        header.insert(header.index("seeds") + 1, "pruned")
    rows = []
    for _, row in board.iterrows():
        ci = row.get(f"{objective}_ci95")
        mean = row[f"{objective}_mean"]
        ci_text = "-" if ci is None or pd.isna(ci) else f"[{mean - ci:.4f}, {mean + ci:.4f}]"
        cells = [_mean_std(row, m) for m in metrics]
        cells.insert(1, ci_text)
        if pruned:  # seeds the pruner stopped early: their scores are of shorter training
            # a reference row (TF-IDF + LR) has no pruner: its count is empty
            cells.insert(0, "-" if pd.isna(row["pruned"]) else str(int(row["pruned"])))
        rows.append(
            ([str(row["data"])] if several_data else [])
            + [str(row["configuration"]), str(row["seeds"])]
            + cells
        )
    return markdown_table(header, rows)


def faithfulness_columns(board: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, header) of the faithfulness table, for the metrics these runs logged
    (erasure at the largest share only; leaderboard.csv has every share)."""
    pcts = sorted(
        {
            int(c.removesuffix("_mean").rsplit("_", 1)[1])
            for c in board
            if c.startswith("faith_comprehensiveness_") and c.endswith("_mean")
        }
    )
    wanted = [
        (Metric.VAL_ACCURACY, "val accuracy"),
        (Metric.ATTENTION_ON_KEYS, "weight on keys"),
        (Metric.ATTENTION_TOP1_KEY_HIT, "top-1 on a key"),
        (Metric.FAITH_OCCLUSION_TAU, "tau vs occlusion"),
    ]
    for k in pcts[-1:]:
        wanted += [
            (Metric.comprehensiveness(k), f"comp. top {k}%"),
            (Metric.comprehensiveness(k, random=True), f"comp. random {k}%"),
            (Metric.sufficiency(k), f"suff. top {k}%"),
            (Metric.sufficiency(k, random=True), f"suff. random {k}%"),
        ]
    wanted.append((Metric.FAITH_UNIFORM_DELTA, "uniform weights: acc. change"))
    return [(m, h) for m, h in wanted if f"{m}_mean" in board]


def faithfulness_markdown(board: pd.DataFrame) -> list[str]:
    """Per configuration, mean ± std over seeds: how much its explanation can be trusted."""
    columns = faithfulness_columns(board)
    if not any(m.startswith(Metric.FAITH_PREFIX) for m, _ in columns):
        return []
    several_data = board["data"].nunique() > 1
    header = (["data"] if several_data else []) + ["configuration", "seeds"]
    header += [h for _, h in columns]
    rows = [
        ([str(row["data"])] if several_data else [])
        + [str(row["configuration"]), str(row["seeds"])]
        + [_mean_std(row, m, digits=3) for m, _ in columns]
        for _, row in board.iterrows()
    ]
    return [
        "## Is the attention an explanation? (faithfulness, mean ± std over seeds)",
        "",
        "Comprehensiveness: the predicted class's probability drop when the top-ranked "
        "tokens are removed (higher: they mattered), next to removing as many random "
        "tokens. Sufficiency: the drop when only they are kept (lower: they suffice). "
        "Tau: rank agreement of the weights with occlusion saliency. Uniform weights: "
        "the validation accuracy change when the learned weights are replaced by uniform "
        "ones (near 0: the model does not need its attention). Variants without weights "
        "(mean, max, last) rank tokens by occlusion saliency.",
        "",
        markdown_table(header, rows),
        "",
    ]


def comparisons_frame(found: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "data": c.data,
                "a": c.a,
                "b": c.b,
                "metric": c.metric,
                "verdict": c.verdict,
                "diff_a_minus_b": c.diff,
                "ci95_low": c.ci95[0],
                "ci95_high": c.ci95[1],
                "ci90_low": c.ci90[0],
                "ci90_high": c.ci90[1],
                "margin": c.margin,
                "p_value": c.p_value,
                "p_adjusted": c.p_adjusted,
                "comparisons_adjusted_over": c.n_tests,
                "mcnemar_p_per_seed": " ".join(f"{p:.3g}" for p in c.mcnemar),
                "seeds": c.seeds,
                "examples_per_seed": c.examples,
                "seeds_needed": c.seeds_needed,
                "split_limited": c.split_limited,
                "method": c.method,
                "intervals_resample": c.sources,
                "statement": c.sentence(),
            }
            for c in found
        ]
    )


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


def answer_lines(
    board: pd.DataFrame,
    found: list[Comparison],
    objective: str,
    baseline: str | None,
    against_references: list[Comparison] = (),
) -> list[str]:
    """The one-paragraph answer per data set, from the comparisons it rests on: each
    configuration against the baseline, or the leader against the others; then the
    leader against each reference model."""
    lines = []
    for data, rows in board.groupby("data", sort=False):
        here = [c for c in found if c.data == data]
        leader = rows.iloc[0]["configuration"]
        if not here and len(rows) == 1:
            lines.append(
                f"On {data}, {leader} is the only configuration: there is nothing to "
                "compare it with but the references."
            )
        elif not here:
            lines.append(
                f"On {data}, {leader} ranks first by {objective}; no two configurations "
                "share two or more seeds, so nothing can be said about the differences "
                "(set `search.seeds`)."
            )
        else:
            focus = here if baseline else [c for c in here if leader in (c.a, c.b)]
            against = f"against {here[0].b}" if baseline else f"for the leader, {leader}"
            text = "; ".join(c.short() for c in focus)
            lines.append(
                f"On {data}, {against} ({objective}; 95% intervals over {here[0].sources}): {text}."
            )
        refs = [c for c in against_references if c.data == data]
        if refs:
            lines.append(
                f"Against the reference{'s' if len(refs) > 1 else ''} "
                f"({objective}; 95% intervals over {refs[0].sources}): "
                + "; ".join(c.short() for c in refs)
                + "."
            )
    return lines


def portable(argv: list[str]) -> list[str]:
    """The command as it travels: a path inside the project is written relative to it (a
    committed report names no folder of the machine it ran on)."""
    from pipeline.config import PROJECT_ROOT

    def relative(arg: str) -> str:
        key, sep, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
        path = Path(value)
        if path.is_absolute() and path.resolve().is_relative_to(PROJECT_ROOT.resolve()):
            value = path.resolve().relative_to(PROJECT_ROOT.resolve()).as_posix() or "."
        return f"{key}{sep}{value}"

    return [relative(arg) for arg in argv]


def context_lines(
    tracker, parent: SearchRun | None, runs: pd.DataFrame, argv: list[str]
) -> list[str]:
    """Where the numbers come from: store, search command, environment, machine."""
    from pipeline.tracking import redact

    lines = [
        f"- store: `{redact(tracker.uri)}`, experiment `{tracker.experiment_name}`",
        f"- runs: {len(runs)} finished trial runs, {runs['label'].nunique()} configurations, "
        f"seeds {sorted(int(s) for s in runs['seed'].dropna().unique())}",
        f"- report: `python -m pipeline.report {redact(' '.join(portable(argv)))}`".rstrip(),
    ]
    if "vectors" in runs:  # model.embeddings.source: where each trial's embedding started
        lines.insert(2, f"- word vectors: {', '.join(sorted(runs['vectors'].dropna().unique()))}")
    if parent is not None:
        lines.insert(1, f"- search `{parent.name}`, parent run `{parent.run_id}`")
        if parent.command:
            lines.append(f"- search command: `{parent.command}`")
        versions = ", ".join(f"{k} {v}" for k, v in sorted(parent.versions.items()))
        if versions:
            lines.append(f"- environment: {versions}")
        machine = [parent.machine.get(k) for k in ("platform", "cpus", "python")]
        if all(machine):
            lines.append(f"- machine: {machine[0]}, {machine[1]} CPUs, Python {machine[2]}")
        if parent.git_commit:
            lines.append(f"- code: git commit `{parent.git_commit[:12]}`")
    return lines


@dataclass
class Report:
    markdown: str
    out: Path
    parent: SearchRun | None  # the search reported on (None for --all)
    leaderboard: pd.DataFrame  # references included (column `reference`)
    comparisons: list[Comparison]
    against_references: list[Comparison] = field(default_factory=list)
    not_logged: str | None = None  # why the parent run did not get the report's files


def load_audit(tracker, parent: SearchRun | None) -> dict | None:
    """The parent's data_audit.json (None for every-search reports and for searches
    logged before the audit existed)."""
    import json

    from pipeline.tracking import TrackingError

    if parent is None:
        return None
    try:
        return json.loads(tracker.read_text(parent.run_id, Artifact.DATA_AUDIT))
    except TrackingError:
        return None


def audit_markdown(audit: dict) -> list[str]:
    """What the data audit found, in the words a reader of the scores needs."""
    s, rows = audit["settings"], audit["rows"]
    exact, conflict = audit["exact"], audit["conflicting"]
    lines = [
        f"- settings: dedupe={s['dedupe']}, conflicting_labels={s['conflicting_labels']}, "
        f"strip_html={str(s['strip_html']).lower()}; {rows['loaded']} rows loaded, "
        f"{rows['kept']} kept ({rows['dropped_copies']} repeated rows and "
        f"{rows['dropped_conflicting']} with conflicting labels dropped, "
        f"{rows['kept_together']} kept in one split with their copies)",
        f"- {exact['copies']} rows repeat another row's text after tokenizing "
        f"({exact['verbatim_copies']} verbatim); {conflict['texts']} texts occur with "
        f"conflicting labels ({conflict['rows']} rows)",
    ]
    if audit.get("near"):
        near = audit["near"]
        lines.append(
            f"- {near['families']} near-copy families (Jaccard >= {near['threshold']:g} of "
            f"token shingles, MinHash LSH) covering {near['rows']} rows"
        )
    if audit["html"]["texts_changed"]:
        lines.append(f"- {audit['html']['texts_changed']} texts had HTML markup stripped")
    header = ["split", "rows", "classes", "copy of a training text (exact / near)", "truncated"]
    table = []
    for name, st in audit["splits"].items():
        classes = ", ".join(f"{k} {v}" for k, v in st["classes"].items())
        leak = "-"
        if "exact_in_train" in st:
            near_part = f" / {st['near_in_train']}" if "near_in_train" in st else ""
            leak = f"{st['exact_in_train']}{near_part} of {st['rows']}"
        table.append([name, str(st["rows"]), classes, leak, f"{st['truncated']:.1%}"])
    lines += ["", markdown_table(header, table)]
    over = [
        f"{name}: {share:.1%}"
        for name, st in audit["splits"].items()
        for kind in ("exact", "near")
        if f"{kind}_in_train" in st
        and (share := st[f"{kind}_in_train"] / st["rows"]) > s["max_leak"]
    ]
    if over:
        lines += [
            "",
            f"**Leak:** more than {s['max_leak']:.0%} of a held-out split has a copy in "
            f"training ({', '.join(over)}); its scores flatter every model. "
            "Re-run with `data.dedupe=near`.",
        ]
    issues = audit.get("label_issues")
    if issues:
        lines += ["", f"- {issues['count']} likely mislabelled rows (cleanlab), first ones:"]
        lines += [
            f"  - `{r['label']}` → `{r['suggested']}` ({r['split']}): {r['text']}"
            for r in issues["rows"][:5]
        ]
    return lines


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
    import matplotlib.pyplot as plt

    from pipeline.reporting.comparisons import comparisons
    from pipeline.reporting.figures import forest_figure, replicates_figure, tradeoff_figure
    from pipeline.reporting.statistics import leaderboard

    parent = tracker.find_search(search) if search else None
    if search and parent is None:
        raise SearchError(
            f"no search named '{search}' in experiment '{tracker.experiment_name}' of the store"
        )
    # A search restarted with force_new supersedes its old parent: only live searches count.
    parents = [parent] if parent is not None else tracker.live_searches()
    runs = load_trials(tracker, [p.run_id for p in parents])
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
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    ranked = board  # the references ranked among the configurations, marked by label
    if not refs.empty:
        shown = leaderboard(refs, objective).assign(reference=True)
        ranked = pd.concat([board.assign(reference=False), shown], ignore_index=True)
        ranked = ranked.sort_values(
            ["data", f"{objective}_mean"], ascending=[True, minimised(objective)]
        ).reset_index(drop=True)
    ranked.to_csv(out / "leaderboard.csv", index=False)
    comparisons_frame([*found, *versus]).to_csv(out / "comparisons.csv", index=False)

    figures = {"replicates.png": replicates_figure(runs, board, objective)}
    if found or versus:
        figures["differences.png"] = forest_figure([*found, *versus], objective)
    if "train_seconds_mean" in board:
        figures["tradeoff.png"] = tradeoff_figure(board, objective)
    importance = None
    if parent is not None:  # one search: one search space to weigh its knobs in
        importance, views = knob_importance_of(tracker, parent, objective)
        figures.update({f"search_{name}": figure for name, figure in views.items()})
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
        plt.close(figure)

    title = f"search `{search}`" if search else f"experiment `{tracker.experiment_name}`"
    parts = [f"# Report: {title}", "", "## Answer", ""]
    parts += answer_lines(board, found, objective, baseline, versus)
    parts += [
        "",
        f"## Leaderboard (by {objective}, mean ± std over seeds)",
        "",
        leaderboard_markdown(ranked, objective),
        "",
    ]
    parts += faithfulness_markdown(board)
    what = f"against `{baseline}`" if baseline else "every pair"
    parts += [f"## Comparisons ({what}; three verdicts: beats, equivalent, underpowered)", ""]
    if found:
        parts += [f"- {c.sentence()}" for c in found]
    else:
        parts.append("No pair of configurations shares two or more seeds: set `search.seeds`.")
    if not refs.empty:
        parts += ["", "## Against the reference models (the best configuration)", ""]
        parts += [f"- {c.sentence()}" for c in versus] or [
            "The best configuration has fewer than two seeds: set `search.seeds` to weigh "
            "it against the references."
        ]
    if missing:
        labels = dict(zip(runs["run_id"], runs["label"], strict=True))
        parts += ["", "## Runs without per-example predictions", ""]
        parts.append(
            "Comparisons that involve these runs rest on their seeds only (paired t-test), "
            "not on the two-level bootstrap:"
        )
        parts += [f"- `{rid}` ({labels.get(rid, '?')}): {why}" for rid, why in missing.items()]
    audit = load_audit(tracker, parent)
    if audit is not None:
        parts += ["", "## The data (audit before the first trial)", ""] + audit_markdown(audit)
    if importance is not None:
        parts += ["", "## Which knobs matter (Optuna: PED-ANOVA and fANOVA, no retraining)", ""]
        parts += importance_markdown(importance)
    parts += ["", "## Figures", ""] + [f"![{n}]({n})" for n in figures]
    parts += ["", "## Where these numbers come from", ""]
    parts += context_lines(tracker, parent, runs, argv)
    markdown = "\n".join(parts) + "\n"
    (out / "report.md").write_text(markdown)
    report = Report(markdown, out, parent, ranked, found, versus)
    if parent is not None:
        try:
            tracker.log_artifacts_to(parent.run_id, str(out), Artifact.REPORT_DIR)
        except Exception as err:  # a READ user reads: the files are written, not logged
            if not refused_permission(err):
                raise
            report.not_logged = write_refused(tracker.uri, tracker.experiment_name)
    return report


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


def knob_importance_of(tracker, parent, objective: str):
    """(KnobImportance, views) of one search, from its trial runs and logged space."""
    import json

    from pipeline.reporting.importance import explain_search

    space = json.loads(tracker.read_text(parent.run_id, Artifact.SEARCH_SPACE))
    records = tracker.trial_runs(parent.run_id, status=Status.FINISHED)
    return explain_search(
        configuration_table(records, objective), space, objective, minimised(objective)
    )


def importance_markdown(importance) -> list[str]:
    table = importance.table()
    if table.empty:
        return [f"Not estimated: {importance.note}."]
    header = ["knob", *[c for c in table.columns if c != "knob"]]
    rows = [[str(r["knob"]), *[f"{r[c]:.2f}" for c in header[1:]]] for _, r in table.iterrows()]
    lines = [markdown_table(header, rows)]
    if importance.note:
        lines += ["", f"Note: {importance.note}."]
    return lines


def run_report(
    cfg: DictConfig,
    search: str | None = None,
    every_search: bool = False,
    objective: str | None = None,
    out: Path | None = None,
    argv: list[str] | None = None,
    baseline: str | None = None,
    margin: float = 1.0,
    adjust: str = "holm",
) -> Report:
    """The report of `search` (default: the latest), or of every live search."""
    from pipeline.tracking import open_tracker

    tracker = open_tracker(cfg.tracking)
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
