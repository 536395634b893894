"""The bag-of-words reference: fitted on the search's split, logged as its own child run
(never a trial, never the best, never refitted on resume), weighed in the report."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.prepare import Tokenizer
from pipeline.training.references import REFERENCES, ReferenceInputs, fit_tfidf_lr


def test_tfidf_lr_picks_its_settings_on_validation():
    rng = np.random.default_rng(0)
    words = {0: ["good", "great", "fine"], 1: ["bad", "awful", "poor"]}
    y = rng.integers(0, 2, 120)
    texts = [" ".join(rng.choice(words[c], 3).tolist() + ["the", "film"]) for c in y]
    inputs = ReferenceInputs(
        train_texts=texts[:80],
        train_y=y[:80],
        val_texts=texts[80:100],
        val_y=y[80:100],
        test_texts=texts[100:],
        n_classes=2,
        tokenize=Tokenizer(r"\w+", True),
        class_weight="balanced",
        objective="val_loss",
    )
    fitted = fit_tfidf_lr(
        inputs, {"c_values": [0.01, 10.0], "ngram_max": [1, 2], "min_df": 1, "max_iter": 500}
    )
    assert fitted.val_probs.shape == (20, 2) and fitted.test_probs.shape == (20, 2)
    np.testing.assert_allclose(fitted.val_probs.sum(axis=1), 1.0)
    assert (fitted.val_probs.argmax(axis=1) == y[80:100]).all()
    assert len(fitted.tried) == 4
    best = min(fitted.tried, key=lambda t: t["val_loss"])
    assert fitted.chosen == {"ngram_max": best["ngram_max"], "C": best["C"]}
    assert fitted.chosen["C"] == 10.0  # weak regularisation fits separable words best
    assert "tfidf-lr" in REFERENCES


def test_a_reference_fits_on_one_blas_thread(monkeypatch):
    """An idle OpenBLAS thread spins: the fit next to the search's start-up keeps to one."""
    from omegaconf import open_dict
    from threadpoolctl import threadpool_info

    from pipeline.config import compose_config, typed_data
    from pipeline.data import prepare
    from pipeline.search.references import fit_reference
    from pipeline.training.references import Reference

    def pools():  # BLAS library -> threads (the fit may load one more, SciPy's)
        return {
            p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"
        }

    seen = []

    def spy(inputs, settings):
        seen.append(set(pools().values()))
        return fit_tfidf_lr(inputs, settings)

    before = pools()
    monkeypatch.setitem(REFERENCES, "spy", Reference("spy", spy))
    cfg = compose_config(["data.synthetic.n_examples=200"])
    with open_dict(cfg):
        cfg.reference["spy"] = cfg.reference["tfidf-lr"]
    fitted = fit_reference(cfg, prepare(typed_data(cfg.data)), "spy", None)
    assert seen == [{1}] and fitted.val_probs.shape[1] == 3
    assert before.items() <= pools().items()  # the process's own pools as they were


SEARCH = [
    "+experiment=quick",
    "tracking.log_model=false",
    "attention.enabled=false",
    "search.name=withref",
    "search.reference=[tfidf-lr]",
    "search.seeds=[0,1]",
    "tuner.max_trials=2",
]


def test_the_reference_is_a_child_run_the_report_weighs_and_a_resume_keeps(store, capsys):
    from pipeline.reporting.search_report import run_report
    from pipeline.search import run_search

    outcome = run_search(store.compose(*SEARCH))
    out = capsys.readouterr().out
    assert "reference tfidf-lr: val_accuracy" in out
    runs = store.runs()
    (ref,) = [r for r in runs if r.data.tags.get("kind") == "reference"]
    parent = next(r for r in runs if r.data.tags["kind"] == "search")
    trials = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert ref.info.status == "FINISHED"
    assert ref.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert ref.data.tags["reference"] == "true" and ref.data.tags["variant"] == "tfidf-lr"
    assert ref.data.tags["data_fingerprint"] == trials[0].data.tags["data_fingerprint"]
    wanted = {"val_accuracy", "val_loss", "val_macro_f1", "test_accuracy", "test_macro_f1"}
    assert wanted <= set(ref.data.metrics)
    assert {"val_accuracy", "val_loss", "val_macro_f1"} <= set(trials[0].data.metrics)
    assert ref.data.params["chosen.C"] and ref.data.params["reference.tfidf-lr.min_df"] == "1"
    artifacts = {a.path for a in store.client().list_artifacts(ref.info.run_id, "predictions")}
    assert artifacts == {"predictions/val.npz"}
    # The tuner never saw it: 2 configurations x 2 seeds, best is a trial.
    assert len(outcome.trials) == 4 and "tfidf-lr" not in set(outcome.trials["variant"])
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in trials}

    run_search(store.compose(*SEARCH))  # resumed: finds the reference FINISHED
    assert "logged before; not refitted" in capsys.readouterr().out
    assert len([r for r in store.runs() if r.data.tags.get("kind") == "reference"]) == 1

    report = run_report(store.tracker(), "withref", out=store.path / "report")
    board = report.leaderboard
    assert board[board["reference"]]["configuration"].tolist() == ["tfidf-lr (reference)"]
    assert board[board["reference"]]["seeds"].tolist() == [1]
    (versus,) = report.against_references
    assert versus.b == "tfidf-lr (reference)" and versus.seeds == 2
    assert versus.verdict in {"beats", "equivalent", "underpowered"}
    assert versus.method == "two-level bootstrap"
    assert "Against the reference" in report.markdown
    assert versus.short() in report.markdown


def test_an_unknown_reference_is_one_line(store):
    from pipeline.errors import SearchError
    from pipeline.search import run_search

    with pytest.raises(SearchError, match=r"search.reference: unknown \['bert'\]; known: tfidf-lr"):
        run_search(store.compose(*SEARCH[:-3], "search.reference=[bert]"))
    assert all(r.info.status != "RUNNING" for r in store.runs())


def test_the_summary_weighs_the_best_against_the_reference_mean_over_splits():
    """With search.vary_split each seed's split has its own reference fit: the summary
    line compares the best configuration's mean over seeds with the references' mean."""
    from types import SimpleNamespace

    from pipeline.search.outcome import reference_lines
    from pipeline.search.references import ReferenceScore

    refs = [
        ReferenceScore("tfidf-lr", seed, {"val_accuracy": acc}, {}, 1.0, f"r{seed}")
        for seed, acc in enumerate([0.80, 0.82, 0.84])
    ]
    outcome = SimpleNamespace(best={"val_accuracy": 0.825}, references=refs)
    (line,) = reference_lines(outcome, "val_accuracy")
    assert line.startswith("reference tfidf-lr: val_accuracy 0.8200 (mean over 3 splits)")
    assert "0.50 points above it" in line
    outcome.references = refs[:1]
    assert reference_lines(outcome, "val_accuracy") == [
        "reference tfidf-lr: val_accuracy 0.8000; the best configuration is 2.50 points "
        "above it (python -m pipeline.report weighs it)"
    ]


def test_a_single_configuration_is_weighed_only_against_the_references():
    import pandas as pd

    from pipeline.reporting.markdown import answer_lines

    board = pd.DataFrame({"data": ["tweets"], "configuration": ["spattn-tanh"]})
    (line,) = answer_lines(board, [], "val_accuracy", None)
    assert line == (
        "On tweets, spattn-tanh is the only configuration: there is nothing to compare it "
        "with but the references."
    )
    two = pd.DataFrame({"data": ["tweets"] * 2, "configuration": ["a", "b"]})
    assert "set `search.seeds`" in answer_lines(two, [], "val_accuracy", None)[0]


ONE_NGRAM = ["reference.tfidf-lr.ngram_max=[1]"]


def _fit_here_only(parent_pid: int):
    """A reference that fails in any process but `parent_pid`, and says where it ran."""
    import os

    from pipeline.training.references import ReferenceFit

    def fit(inputs, settings):
        if os.getpid() != parent_pid:
            raise RuntimeError("not in this process")
        probs = np.full((len(inputs.val_texts), inputs.n_classes), 1.0 / inputs.n_classes)
        return ReferenceFit(probs, None, {"pid": os.getpid()}, 0.0)

    return fit


def test_references_fitted_ahead_in_a_forked_process_are_the_in_line_fits(store):
    """What `python -m pipeline.search` does while it imports TensorFlow: the same fits, in
    another process; one that fails there (here: a reference that only works in the
    search's process) is fitted in line, as without the fit ahead."""
    import os

    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.references import ReferencePrefit, fit_reference, run_references
    from pipeline.tracking.store import open_tracker
    from pipeline.training.references import Reference, register_reference

    cfg = store.compose("+experiment=quick", "search.reference=[tfidf-lr]", *ONE_NGRAM)
    data = prepare(typed_data(cfg.data))
    prefit = ReferencePrefit(cfg, data)
    ahead = prefit.take("tfidf-lr", None)
    inline = fit_reference(cfg, data, "tfidf-lr", None)
    assert ahead is not None and ahead.chosen == inline.chosen
    np.testing.assert_array_equal(ahead.val_probs, inline.val_probs)
    np.testing.assert_array_equal(ahead.test_probs, inline.test_probs)
    assert prefit.take("tfidf-lr", None) is None  # handed over once

    register_reference(Reference("here-only", _fit_here_only(os.getpid())))
    try:
        cfg = store.compose(
            "+experiment=quick", "search.reference=[here-only,tfidf-lr]", *ONE_NGRAM
        )
        prefit = ReferencePrefit(cfg, data)
        tracker = open_tracker(cfg.tracking)
        with tracker.run("parent", tags={"kind": "search"}) as parent:
            scores = run_references(cfg, data, tracker, parent.info.run_id, "s", prefit)
    finally:
        REFERENCES.pop("here-only")
    assert [s.name for s in scores] == ["here-only", "tfidf-lr"]
    assert scores[0].chosen == {"pid": os.getpid()}  # fitted again, in line
    assert scores[1].chosen == inline.chosen
    inline_accuracy = (inline.val_probs.argmax(axis=1) == data.y["val"]).mean()
    assert scores[1].metrics["val_accuracy"] == pytest.approx(inline_accuracy)  # the fit logged
    assert all(r.info.status == "FINISHED" for r in store.runs())
