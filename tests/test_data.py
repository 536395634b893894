"""Loaders, splits, vocabulary, fingerprint and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.data import DataError, balanced_class_weights, prepare
from pipeline.data.prepare import build_vocab, encode, stratified_split
from pipeline.errors import UserFacingError
from tests.conftest import AIRLINE_CSV, needs_airline


def data_cfg(*overrides: str):
    return typed_data(compose_config(list(overrides)).data)


def small_synthetic(*overrides: str):
    return data_cfg("data.synthetic.n_examples=400", *overrides)


def write_csv(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def test_synthetic_negation_needs_order_and_marks_the_label_s_keys():
    """Each "not" negates the next key; the label's keys are the others, marked. Both
    classes occur equally often, so counting words cannot tell them apart."""
    d = prepare(small_synthetic())
    assert d.n_classes == 3
    for split in ("train", "val", "test"):
        for row, label in enumerate(d.y[split]):
            ids = d.x[split][row]
            tokens = [d.vocab[i] for i in ids if i]
            marked = {int(p) for p in np.flatnonzero(d.key_masks[split][row])}
            negated, own, pending = [], [], False
            for position, token in enumerate(tokens):
                if token == "not":
                    pending = True
                elif token.startswith("k"):
                    (negated if pending else own).append((position, token))
                    pending = False
            assert {p for p, _ in own} == marked
            assert {t.split("_")[0] for _, t in own} == {f"k{label}"}
            assert len({t.split("_")[0] for _, t in negated} - {f"k{label}"}) == 1
            assert len(negated) == len(own) in (2, 3)


def test_synthetic_majority_of_keys_decides_the_label_and_keys_are_marked():
    d = prepare(small_synthetic("data.synthetic.rule=majority"))
    assert d.n_classes == 3 and d.x["train"].dtype == np.int32
    for split in ("train", "val", "test"):
        mask = d.key_masks[split]
        assert mask.shape == d.x[split].shape
        assert np.all(mask.sum(axis=1) >= 2)
        for row in range(len(mask)):
            label = d.y[split][row]
            marked = [d.vocab[i] for i in d.x[split][row][mask[row]]]
            assert all(k.startswith(f"k{label}_") for k in marked)
            unmarked = [d.vocab[i] for i in d.x[split][row][~mask[row]] if i]
            others = [k for k in unmarked if k.startswith("k")]
            assert not any(k.startswith(f"k{label}_") for k in others)
            assert len(others) < len(marked)


def test_synthetic_is_seeded_and_lengths_vary():
    a, b = prepare(small_synthetic()), prepare(small_synthetic())
    c = prepare(small_synthetic("data.synthetic.seed=1"))
    np.testing.assert_array_equal(a.x["train"], b.x["train"])
    assert a.fingerprint == b.fingerprint != c.fingerprint
    lengths = (a.x["train"] != 0).sum(axis=1)
    assert lengths.min() <= 15 and lengths.max() >= 70  # 12 planted words at least


def test_splits_are_deterministic_disjoint_and_stratified():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    s1 = stratified_split(labels, 0.2, 0.1, seed=5)
    s2 = stratified_split(labels, 0.2, 0.1, seed=5)
    s3 = stratified_split(labels, 0.2, 0.1, seed=6)
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
    assert not np.array_equal(s1["val"], s3["val"])
    all_idx = np.concatenate(list(s1.values()))
    assert len(all_idx) == len(set(all_idx)) == len(labels)
    for cls, n in zip([0, 1, 2], [600, 300, 100], strict=True):
        assert (labels[s1["val"]] == cls).sum() == round(0.2 * n)
        assert (labels[s1["test"]] == cls).sum() == round(0.1 * n)


def test_vocab_reserves_padding_and_oov_and_is_fitted_on_train_only():
    vocab = build_vocab([["b", "a", "a"], ["c"]], vocab_size=4, min_count=1)
    assert vocab == ["", "[UNK]", "a", "b"]
    ids = encode([["a", "zzz", "c"], []], vocab, max_len=4)
    assert ids.tolist() == [[2, 1, 1, 0], [0, 0, 0, 0]]
    d = prepare(small_synthetic("data.vocab_size=50"))
    assert len(d.vocab) == 50 and d.vocab[:2] == ["", "[UNK]"]


def test_fingerprint_changes_with_preprocessing_not_with_unused_sections():
    base = prepare(small_synthetic()).fingerprint
    assert prepare(small_synthetic("data.max_len=40")).fingerprint != base
    # Only the chosen loader's section is composed, so unused ones cannot count.
    assert small_synthetic().csv is None and small_synthetic().text_dir is None
    assert prepare(small_synthetic("data.synthetic.seed=0")).fingerprint == base


def test_balanced_class_weights():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[0] == pytest.approx(4 / 6) and w[1] == pytest.approx(2.0)


def cfg_overrides(path) -> list[str]:
    return [
        "data=csv",
        f"data.csv.path={path}",
        "data.csv.text_column=txt",
        "data.csv.label_column=lab",
        "+data.csv.label_map.p=pos",
        "+data.csv.label_map.n=neg",
        "data.val_fraction=0.34",
        "data.test_fraction=0",
    ]


def test_csv_loader_with_label_map_and_multiline_quoted_fields(tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        'txt,lab\n"good, fine\nreally",p\nbad 😠,n\nok,p\nmeh,n\nyes,p\nno,n\n',
    )
    cfg = data_cfg(*cfg_overrides(path))
    d = prepare(cfg)
    assert d.class_names == ["neg", "pos"]
    assert sum(len(v) for v in d.y.values()) == 6
    assert "😠" in d.vocab or "really" in d.vocab
    assert d.name == "d"  # the file's name, not the generic preset's `csv`
    named = prepare(data_cfg(*cfg_overrides(path), "data.name=reviews"))
    assert named.name == "reviews" and named.fingerprint == d.fingerprint


@pytest.mark.parametrize(
    ("content", "overrides", "needle"),
    [
        (None, [], "file not found"),
        ("", [], "empty"),
        ("text,label\n", [], "no rows"),
        ("text,label\na,x\nb,x\nc,x\n", [], "at least 2 classes"),
        ("body,label\na,x\n", [], "column 'text'"),
        ("text,category\na,x\n", [], "column 'label'"),
        ("text,label\na,x\nb,y\n", ["+data.csv.label_map.x=X"], "label 'y'"),
        (b"text,label\nna\xefve,x\nb,y\n", [], "not UTF-8"),
    ],
)
def test_csv_bad_input_gets_a_one_line_error(tmp_path, content, overrides, needle):
    path = tmp_path / "bad.csv"
    if content is not None:
        write_csv(path, content)
    cfg = data_cfg("data=csv", f"data.csv.path={path}", *overrides)
    with pytest.raises(DataError) as err:
        prepare(cfg)
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_non_utf8_can_be_replaced_by_config(tmp_path):
    path = write_csv(tmp_path / "latin.csv", b"text,label\nna\xefve,x\nb,y\nc,x\nd,y\ne,x\nf,y\n")
    d = prepare(data_cfg("data=csv", f"data.csv.path={path}", "data.encoding_errors=replace"))
    assert d.n_classes == 2


def test_csv_without_path_says_how_to_set_it():
    missing = r"^data.csv.path: no value given \(set data.csv.path="
    with pytest.raises(UserFacingError, match=missing):
        prepare(data_cfg("data=csv"))


def test_text_dir_loader_keeps_test_split_aside(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for label in ("neg", "pos"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.txt").write_text(f"{label} {split} review number {i}")
    d = prepare(
        data_cfg("data=text_dir", f"data.text_dir.root={tmp_path}", "data.val_fraction=0.34")
    )
    assert len(d.y["test"]) == 4
    assert len(d.y["train"]) + len(d.y["val"]) == 12
    assert all("review" in t for t in d.texts["test"])
    assert d.name == tmp_path.name


def test_text_dir_missing_root():
    with pytest.raises(DataError, match="folder not found"):
        prepare(data_cfg("data=text_dir", "data.text_dir.root=/nonexistent/reviews"))


@needs_airline
def test_airline_tweets_real_file():
    d = prepare(data_cfg("data=airline_tweets", "data.dedupe=none"))  # every row
    assert d.class_names == ["negative", "neutral", "positive"]
    total = sum(len(v) for v in d.y.values())
    assert total == 14640
    counts = np.bincount(np.concatenate(list(d.y.values())))
    assert counts.tolist() == [9178, 3099, 2363]
    # stratified: the validation split keeps the class imbalance
    val_share = np.bincount(d.y["val"]) / len(d.y["val"])
    np.testing.assert_allclose(val_share, counts / total, atol=0.01)
    assert any("\n" in t for t in d.texts["train"] + d.texts["val"] + d.texts["test"])
    assert AIRLINE_CSV.exists()
