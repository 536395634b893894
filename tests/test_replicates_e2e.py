"""End to end: seed replicates, the report and reproduce.

The search and the reproduction run in-process; the report runs as its CLI in a
subprocess (it must never import TensorFlow), and the CLIs' bad-input paths are
checked for their one-line errors.
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from pipeline.search import reproduce_run, run_search
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e


def write_keyword_csv(path, n: int = 240, seed: int = 0) -> None:
    """Texts whose label is decided by one planted word among random filler."""
    rng = np.random.default_rng(seed)
    keys = {"pos": ["great", "love"], "neg": ["awful", "hate"]}
    filler = [f"w{i}" for i in range(60)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            words = list(rng.choice(filler, rng.integers(4, 14)))
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(keys[label])))
            writer.writerow([" ".join(words), label])


def test_seed_replicates_report_and_reproduce(store, run_cli, capsys):
    data_csv = store.path / "keywords.csv"
    write_keyword_csv(data_csv)
    tracking = [o for o in store.overrides if o.startswith("tracking.")]
    cfg = store.compose(
        "+experiment=quick",
        "data=csv",
        f"data.csv.path={data_csv}",
        "data.max_len=20",
        "tuner=grid",
        "tuner.max_trials=2",
        "search_space=pooling",
        "search_space.pooling.values=[attention,mean]",
        "~search_space.attention_activation",
        "search.seeds=[0,1]",
        "search.name=replicated",
        "tracking.log_model=false",
        "train.epochs=2",
    )
    outcome = run_search(cfg)
    printed = capsys.readouterr().out
    assert "x 2 seeds" in printed and "mean val_accuracy over 2 seeds" in printed
    assert len(outcome.trials) == 4 and set(outcome.trials["seed"]) == {0, 1}

    client = store.client()
    runs = store.runs()
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    by_group: dict[str, set[str]] = {}
    for child in children:
        by_group.setdefault(child.data.tags["group"], set()).add(child.data.tags["seed"])
    assert sorted(by_group.values(), key=sorted) == [{"0", "1"}, {"0", "1"}]
    parent = next(r for r in runs if r.data.tags.get("kind") == "search")

    # Report: reads MLflow only, never TensorFlow; writes and logs its files.
    out = store.path / "report"
    code = (
        "import sys; from pipeline.report import main; rc = main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(rc)"
    )
    import subprocess

    report = subprocess.run(
        [sys.executable, "-c", code, "replicated", "--out", str(out), *tracking],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| configuration | seeds |" in report.stdout
    assert {"report.md", "leaderboard.csv", "comparisons.csv", "replicates.png"} <= {
        p.name for p in out.iterdir()
    }
    import pandas as pd

    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["configuration"]) == ["attn-tanh", "mean"]
    assert list(board["seeds"]) == [2, 2]
    seeds_of = {c.data.tags["variant"]: [] for c in children}
    for c in children:
        seeds_of[c.data.tags["variant"]].append(c.data.metrics["val_accuracy"])
    for _, row in board.iterrows():
        assert row["val_accuracy_mean"] == pytest.approx(np.mean(seeds_of[row["configuration"]]))
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert len(comparisons) == 1 and comparisons.loc[0, "seeds"] == 2
    # Per-example evidence: every child logged its validation predictions, and the
    # comparison used them (two-level bootstrap, McNemar per seed).
    assert comparisons.loc[0, "method"] == "two-level bootstrap"
    assert comparisons.loc[0, "verdict"] in ("beats", "equivalent", "underpowered")
    assert len(str(comparisons.loc[0, "mcnemar_p_per_seed"]).split()) == 2
    report_md = (out / "report.md").read_text()
    assert report_md.startswith("# Report: search `replicated`\n\n## Answer\n\nOn ")
    assert "no clear difference" not in report_md
    assert (out / "differences.png").stat().st_size > 5_000
    from pipeline.tracking.store import Tracker

    tracker = Tracker(store.uri, "attention-search", str(store.path / "artifacts"))
    tracker.connect()
    for child in children:
        saved = tracker.read_predictions(child.info.run_id)
        n_val = len(saved.y)
        assert saved.probs.shape == (n_val, 2) and len(saved.index) == n_val
        accuracy = float((saved.probs.argmax(1) == saved.y).mean())
        assert accuracy == pytest.approx(child.data.metrics["val_accuracy"], abs=1e-6)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in logged

    # Reproduce the second seed of one configuration: same metrics, new tagged run.
    target = next(c for c in children if c.data.tags["seed"] == "1")
    again = reproduce_run(store.compose(), target.info.run_id)
    assert again.matches, again.table
    assert again.original.run_id == target.info.run_id
    copies = client.search_runs(
        [target.info.experiment_id], filter_string=f"tags.reproduces = '{target.info.run_id}'"
    )
    assert len(copies) == 1 and copies[0].info.status == "FINISHED"
    assert copies[0].info.run_id == again.reproduced.run_id
    for metric in ("val_accuracy", "val_loss", "val_macro_f1", "best_val_loss"):
        assert copies[0].data.metrics[metric] == pytest.approx(
            target.data.metrics[metric], abs=1e-6
        )

    # The data changed since: refuse, in one line.
    with open(data_csv, "a") as f:
        f.write("w1 w2 great,pos\n")
    refused = run_cli("reproduce", target.info.run_id, *tracking)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: data fingerprint differs")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_vary_split_redraws_each_seed_s_split_and_its_runs_reproduce(store):
    from pipeline.reporting.search_report import run_report

    outcome = run_search(
        store.compose(
            "+experiment=quick",
            "data.synthetic.n_examples=240",
            "tuner=grid",
            "tuner.max_trials=2",
            "search_space=pooling",
            "search_space.pooling.values=[attention,mean]",
            "~search_space.attention_activation",
            "search.seeds=[0,1]",
            "search.vary_split=true",
            "search.name=splits",
            "search.baseline=mean",
            "tracking.log_model=false",
        )
    )
    assert len(outcome.trials) == 4 and outcome.test_metrics
    children = [r for r in store.runs() if r.data.tags.get("kind") == "trial"]
    by_seed = {}
    for child in children:
        by_seed.setdefault(child.data.tags["seed"], set()).add(child.data.tags["data_fingerprint"])
    # Each seed trained on its own split; both configurations of a seed on the same one.
    assert all(len(prints) == 1 for prints in by_seed.values())
    assert by_seed["0"] != by_seed["1"]
    report = run_report(store.tracker(), "splits", out=store.path / "report")
    (comparison,) = report.comparisons
    assert comparison.b == "mean" and comparison.method == "two-level bootstrap"
    assert comparison.sources == "seeds, validation examples and the train/validation split"
    assert "train/validation split" in report.markdown.split("## Leaderboard")[0]

    target = next(c for c in children if c.data.tags["seed"] == "1")
    again = reproduce_run(store.compose(), target.info.run_id)
    assert again.matches, again.table


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("report", ["no-such-search"], "no search named 'no-such-search'"),
        ("reproduce", ["0123456789abcdef"], "run 0123456789abcdef: not found"),
        ("report", ["tracking.nope=1"], "config:"),
    ],
)
def test_report_and_reproduce_bad_input_is_one_line(store, run_cli, module, args, message):
    tracking = [o for o in store.overrides if o.startswith("tracking.")]
    result = run_cli(module, *args, *tracking)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_reproduce_refuses_a_run_that_is_not_a_trial(store, run_cli):
    from pipeline.tracking import Tracker

    tracking = [o for o in store.overrides if o.startswith("tracking.")]
    tracker = Tracker(store.uri, "attention-search", f"{store.path}/a")
    tracker.connect()
    with tracker.run("a-search", tags={"kind": "search", "search_id": "a-search"}) as run:
        parent_id = run.info.run_id
    result = run_cli("reproduce", parent_id, *tracking, fresh=True)  # its fresh-interpreter test
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: run {parent_id} is not a trial run of a search (kind=search); "
        "pass the id of a child run"
    )
