"""How a report says it: the markdown of its leaderboard, faithfulness, comparisons, the
answer to the question, the data audit, knob importance and where the numbers come from,
and the comparisons as a table. Pure text from frames and records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.reporting.comparisons import Comparison
from pipeline.tracking import Metric, SearchRun

COLUMNS = {  # leaderboard metric -> markdown header
    Metric.VAL_ACCURACY: "val accuracy",
    Metric.VAL_MACRO_F1: "val macro-F1",
    Metric.VAL_LOSS: "val loss",
    Metric.ATTENTION_ON_KEYS: "attention on keys",
    Metric.ATTENTION_ENTROPY: "attention entropy",
    Metric.TRAIN_SECONDS: "train s",
    Metric.PARAM_COUNT: "params",
}


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


def race_markdown(race: dict) -> list[str]:
    """`search.seeds=adaptive`: the seeds each configuration got and its last verdict."""
    pairs, names = race.get("pairs", {}), race.get("configurations", {})
    rows = [
        [
            f"{names.get(k, k)} (trial {int(k) + 1 if k.isdigit() else k})",
            str(n),
            "incumbent" if k not in pairs else pairs[k]["verdict"],
        ]
        for k, n in sorted(race.get("seeds", {}).items(), key=lambda kv: -kv[1])
    ]
    lines = [
        f"Stopped after {len(race.get('rounds', []))} round(s): {race.get('stopped', '?')}; "
        f"{sum(race.get('seeds', {}).values())} trainings.",
        "",
        markdown_table(["configuration", "seeds", "against the incumbent"], rows),
        "",
        "A verdict here is the race's, at its sequential levels; the comparisons above "
        "weigh every seed at once. `futile`: at its current gap, the most seeds allowed "
        "would not settle the pair; `split-limited`: no number of seeds would, on this "
        "validation split.",
    ]
    return lines


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
