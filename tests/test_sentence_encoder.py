"""The `minilm-lr` reference: all-MiniLM-L6-v2 (int8 ONNX, the installed packages) +
logistic regression, its files checked against their pinned sha256, its embeddings
cached by the set of texts, and its run in a search like any reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pipeline.config import compose_config, to_plain
from pipeline.training import sentence_encoder
from pipeline.training.references import ReferenceInputs, fit_minilm_lr
from pipeline.training.sentence_encoder import EncoderError, embed

GOOD = ["the crew was {} and kind", "a {} flight, thank you", "{} service, loved the seats"]
BAD = ["my bag is lost, {} again", "delayed for hours, {}", "rude agent and a {} refund"]
WORDS = ["lovely", "great", "awful", "slow", "fine", "late", "nice", "poor"]


def settings() -> dict:
    return to_plain(compose_config([]).reference)["minilm-lr"]


def tiny_inputs(cache_dir) -> ReferenceInputs:
    texts = [t.format(w) for w in WORDS for t in GOOD + BAD]
    y = np.array([int(t in BAD) for w in WORDS for t in GOOD + BAD])
    order = np.random.default_rng(0).permutation(len(texts))
    texts, y = [texts[i] for i in order], y[order]
    return ReferenceInputs(
        train_texts=texts[:32], train_y=y[:32], val_texts=texts[32:], val_y=y[32:],
        test_texts=[], n_classes=2, tokenize=str.split, class_weight=None,
        objective="val_accuracy", cache_dir=cache_dir,
    )  # fmt: skip


def test_minilm_lr_tells_a_tiny_text_set_apart_and_embeds_it_once(tmp_path, monkeypatch):
    inputs = tiny_inputs(tmp_path)
    first = fit_minilm_lr(inputs, settings())
    assert first.chosen["encoding_s"] > 0 and first.val_probs.shape == (16, 2)
    assert (first.val_probs.argmax(axis=1) == inputs.val_y).mean() >= 0.9
    cached = list(tmp_path.glob("minilm-lr-*.npz"))
    assert len(cached) == 1 and (tmp_path / "verified-minilm-lr.json").is_file()

    def no_encoding(*args):
        raise AssertionError("encoded again")

    monkeypatch.setattr(sentence_encoder, "_encode", no_encoding)
    again = fit_minilm_lr(inputs, settings())  # another split of the same texts: cached too
    assert again.chosen["encoding_s"] == 0
    np.testing.assert_allclose(again.val_probs, first.val_probs)


def test_the_embeddings_are_unit_length_and_similar_texts_are_closer():
    texts = ["the flight was great", "a great flight", "my luggage never arrived"]
    vectors, _ = embed("minilm-lr", texts, settings(), None)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_a_file_that_is_not_the_pinned_one_is_refused_in_one_line(tmp_path):
    wrong = copy.deepcopy(settings())
    wrong["files"]["model"]["sha256"] = "0" * 64
    with pytest.raises(EncoderError) as err:
        embed("minilm-lr", ["a text"], wrong, tmp_path)
    message = str(err.value)
    assert "\n" not in message and "reference.minilm-lr.files.model.sha256" in message
    assert "8199be6f699a" in message  # what the installed file hashes to
    assert not (tmp_path / "verified-minilm-lr.json").exists()


def test_a_missing_package_names_what_to_install():
    missing = copy.deepcopy(settings())
    missing["files"]["model"].update(module="not_installed_minilm", package="not-installed")
    with pytest.raises(EncoderError, match=r"the package not-installed is not installed \(pip"):
        embed("minilm-lr", ["a text"], missing, None)


def test_a_search_logs_minilm_lr_as_a_reference_run(store):
    from pipeline.search import run_search
    from pipeline.search.references import fit_reference

    cfg = store.compose(
        "+experiment=quick",
        "tracking.log_model=false",
        "attention.enabled=false",
        "tuner.max_trials=1",
        "search.reference=[minilm-lr]",
    )
    run_search(cfg)
    (ref,) = [r for r in store.runs() if r.data.tags.get("kind") == "reference"]
    assert ref.info.status == "FINISHED" and ref.data.tags["variant"] == "minilm-lr"
    assert ref.data.params["reference.minilm-lr.files.model.sha256"].startswith("8199be6f")
    assert {"val_accuracy", "test_accuracy"} <= set(ref.data.metrics)
    assert float(ref.data.params["chosen.encoding_s"]) > 0
    # A second search on the same data embeds nothing.
    from pipeline.config import typed_data
    from pipeline.data import prepare

    again = fit_reference(cfg, prepare(typed_data(cfg.data)), "minilm-lr", None)
    assert again.chosen["encoding_s"] == 0
