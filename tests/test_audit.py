"""The data audit (pipeline/data/audit.py): duplicates, leaks across splits, conflicting
labels, markup; group-aware splitting; what the parent run and the report show."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.config.validation import ConfigError, validate
from pipeline.data import prepare
from pipeline.data.audit import strip_html
from pipeline.data.duplicates import stratified_group_split
from pipeline.data.prepare import NEUTRAL_SETTINGS, hashed_preprocessing, stratified_split
from tests.conftest import needs_airline

QUICK = ["+experiment=quick", "tracking.log_model=false", "attention.enabled=false"]
WORDS = [f"word{i}" for i in range(400)]


def write_rows(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def leaky_rows(n_texts: int = 60, copies: int = 4, seed: int = 0):
    """`n_texts` distinct texts of 20 words, each written `copies` times with one word
    changed (a near-copy family), plus one exact copy in another case, and two texts
    seen with both labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_texts):
        words = list(rng.choice(WORDS, 20, replace=False))
        label = "pos" if i % 2 else "neg"
        rows.append((" ".join(words), label))
        rows.append((" ".join(words).upper(), label))  # the same text once normalised
        for _ in range(copies - 1):
            copy = list(words)
            copy[rng.integers(20)] = str(rng.choice([w for w in WORDS if w not in copy]))
            rows.append((" ".join(copy), label))
    rows += [("a text with two labels", "pos"), ("A text with two labels!", "neg")]
    rows += [("A TEXT WITH TWO LABELS", "neg"), ("another doubtful text", "neg")]
    rows += [("another doubtful text", "pos")]
    return rows


def csv_data(path, *overrides: str):
    return prepare(
        typed_data(compose_config(["data=csv", f"data.csv.path={path}", *overrides]).data)
    )


def split_of(data) -> dict[int, str]:
    return {int(i): name for name, idx in data.indices.items() for i in idx}


def test_strip_html_removes_tags_and_decodes_entities_but_keeps_text_with_angles():
    assert (
        strip_html("Great film.<br /><br />Loved it &amp; more") == "Great film.  Loved it & more"
    )
    assert strip_html("<p class='x'>hi</p><!-- note -->") == " hi  "
    assert strip_html("i <3 it, 2 < 3 > 1") == "i <3 it, 2 < 3 > 1"


def test_markup_is_stripped_before_tokenizing_and_counted(tmp_path):
    rows = [(f"review {i} was<br />good &amp; fun", "pos" if i % 2 else "neg") for i in range(20)]
    data = csv_data(write_rows(tmp_path / "r.csv", rows))
    assert "br" not in data.vocab and "<" not in data.vocab and "&" in data.vocab
    assert data.audit.report["html"]["texts_changed"] == 20
    kept = csv_data(tmp_path / "r.csv", "data.strip_html=false")
    assert "br" in kept.vocab and kept.audit.report["html"]["texts_changed"] == 0


def test_the_audit_counts_exact_near_and_conflicting_copies_across_splits(tmp_path):
    path = write_rows(tmp_path / "leaky.csv", leaky_rows())
    data = csv_data(path, "data.dedupe=none")
    report = data.audit.report
    assert report["rows"] == {
        "loaded": 305, "kept": 305, "dropped_copies": 0, "dropped_conflicting": 0,
        "kept_together": 0, "empty": 0,
    }  # fmt: skip
    assert report["exact"]["copies"] == 60 + 1 + 1  # upper-case copies, two-label texts
    assert report["exact"]["verbatim_copies"] == 1
    assert report["conflicting"]["texts"] == 2 and report["conflicting"]["verbatim_texts"] == 1
    assert report["conflicting"]["rows"] == 4  # ("...labels!" is another text)
    assert report["near"]["families"] >= 55  # nearly every family of one-word changes
    # row by row, a random split puts many copies on both sides
    assert data.audit.leaks["val exact"] > 0.05 and data.audit.leaks["val near"] > 0.3
    assert any("data.dedupe" in w for w in data.audit.warnings)
    assert "val" in data.audit.leak_tag()
    json.dumps(report)  # what the parent run logs as data_audit.json


def test_dedupe_exact_drops_repeats_and_keeps_one_text_in_one_split(tmp_path):
    path = write_rows(tmp_path / "leaky.csv", leaky_rows())
    data = csv_data(path, "data.dedupe=exact")
    assert data.audit.report["rows"]["dropped_copies"] == 60  # not the two-label rows
    train = {" ".join(t.lower().split()) for t in data.texts["train"]}
    assert not any(" ".join(t.lower().split()) in train for t in data.texts["val"])
    assert data.audit.leaks["val exact"] == 0.0 and data.audit.leaks["test exact"] == 0.0
    assert any("repeated rows dropped" in n for n in data.notes)
    # the rows of a text with two labels stay, in one split
    where = split_of(data)
    doubtful = [i for i, (t, _) in enumerate(leaky_rows()) if "doubtful" in t]
    assert len({where[i] for i in doubtful}) == 1 and all(i in where for i in doubtful)


def test_dedupe_near_keeps_every_copy_family_in_one_split_deterministically(tmp_path):
    rows = leaky_rows()
    path = write_rows(tmp_path / "leaky.csv", rows)
    data = csv_data(path, "data.dedupe=near")
    where = split_of(data)
    for family in range(60):  # rows 5*f .. 5*f+4: one text, its upper-case copy, 3 near
        splits = {where[i] for i in range(5 * family, 5 * family + 5) if i in where}
        assert len(splits) == 1, (family, splits)
    assert data.audit.leaks["val near"] == 0.0 and data.audit.leaks["test near"] == 0.0
    again = csv_data(path, "data.dedupe=near")
    assert all(np.array_equal(data.indices[k], again.indices[k]) for k in data.indices)
    other = csv_data(path, "data.dedupe=near", "data.split_seed=1")
    assert not np.array_equal(data.indices["val"], other.indices["val"])
    # class balance survives whole-family splitting
    assert 0.3 < np.mean(data.y["val"]) < 0.7


def test_conflicting_labels_drop_removes_every_row_of_such_a_text(tmp_path):
    path = write_rows(tmp_path / "leaky.csv", leaky_rows())
    data = csv_data(path, "data.conflicting_labels=drop")
    texts = [t.lower() for split in data.texts.values() for t in split]
    assert not {"a text with two labels", "another doubtful text"} & set(texts)
    assert "a text with two labels!" in texts  # another text, one label
    assert data.audit.report["rows"]["dropped_conflicting"] == 4


def split_before_groups(labels, val_fraction, test_fraction, seed):
    """`stratified_split` as versions before group-aware splitting wrote it: the splits
    of every run logged then, which `pipeline.reproduce` must draw again."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(val_fraction * len(idx))) or int(val_fraction > 0 and len(idx) >= 2)
        n_test = int(round(test_fraction * len(idx))) or int(
            test_fraction > 0 and len(idx) - n_val >= 2
        )
        parts["val"].extend(idx[:n_val])
        parts["test"].extend(idx[n_val : n_val + n_test])
        parts["train"].extend(idx[n_val + n_test :])
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


@pytest.mark.parametrize("n, fractions", [(500, (0.15, 0.15)), (7, (0.3, 0.0)), (40, (0.2, 0.1))])
def test_one_row_per_group_draws_the_split_of_earlier_versions(n, fractions):
    labels = np.random.default_rng(n).integers(0, 3, n)
    before = split_before_groups(labels, *fractions, seed=7)
    now = stratified_split(labels, *fractions, seed=7)
    assert all(np.array_equal(before[k], now[k]) for k in before)
    grouped = stratified_group_split(labels, np.arange(n), *fractions, seed=7)
    assert all(np.array_equal(before[k], grouped[k]) for k in before)


def test_a_fixed_test_split_keeps_its_rows_over_their_training_copies(tmp_path):
    for split, label, text in [
        ("train", "neg", "a dull film"),
        ("train", "pos", "a bright film"),
        ("test", "neg", "a dull film"),
    ] + [("train", lab, f"{lab} review {i}") for lab in ("neg", "pos") for i in range(6)]:
        folder = tmp_path / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{len(list(folder.iterdir()))}.txt").write_text(text)
    data = prepare(
        typed_data(compose_config(["data=text_dir", f"data.text_dir.root={tmp_path}"]).data)
    )
    assert data.texts["test"] == ["a dull film"]
    assert "a dull film" not in data.texts["train"] + data.texts["val"]


def test_neutral_settings_leave_the_fingerprint_of_earlier_runs(tmp_path):
    cfg = compose_config(["data.dedupe=none", "data.strip_html=false"])
    plain = {k: v for k, v in dict(cfg.data).items()}
    from pipeline.config import to_plain

    hashed = hashed_preprocessing(to_plain(cfg.data), "synthetic")
    assert not set(NEUTRAL_SETTINGS) & set(hashed) and "audit" not in hashed
    assert "near_duplicates" not in hashed and "dedupe" in plain
    base = prepare(typed_data(cfg.data)).fingerprint
    assert (
        prepare(
            typed_data(compose_config(["data.dedupe=none", "data.audit.enabled=false"]).data)
        ).fingerprint
        == base
    )
    fingerprints = {
        prepare(typed_data(compose_config(ov).data)).fingerprint
        for ov in (["data.dedupe=exact"], ["data.dedupe=near"], ["data.dedupe=none"])
    }
    assert len(fingerprints) == 3 and base in fingerprints


def test_label_issues_find_planted_flips(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = WORDS[:40], WORDS[40:80]
    rows = []
    for i in range(200):
        label = "pos" if i % 2 else "neg"
        pool = good if label == "pos" else bad
        rows.append((" ".join(rng.choice(pool, 8)), label))
    flipped = list(range(0, 200, 20))  # 10 rows whose words say the other class
    for i in flipped:
        rows[i] = (rows[i][0], "pos" if rows[i][1] == "neg" else "neg")
    path = write_rows(tmp_path / "flips.csv", rows)
    data = csv_data(path, "data.audit.label_issues=true", "data.dedupe=none")
    issues = data.audit.report["label_issues"]
    found = {r["row"] for r in issues["rows"]}
    assert len(found & set(flipped)) >= 8 and issues["count"] <= 15
    assert all(r["suggested"] != r["label"] for r in issues["rows"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.near_duplicates.threshold=0", "data.near_duplicates.threshold"),
        ("data.near_duplicates.threshold=1.5", "data.near_duplicates.threshold"),
        ("data.audit.max_leak=1", "data.audit.max_leak"),
    ],
)
def test_bad_audit_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config([override]))


def test_an_unknown_dedupe_mode_fails_while_composing():
    with pytest.raises(Exception, match="dedupe"):
        compose_config(["data.dedupe=fuzzy"])


@needs_airline
def test_airline_tweets_audit_finds_the_copies_and_exact_dedupe_removes_the_leak():
    data = prepare(typed_data(compose_config(["data=airline_tweets"]).data))
    report = data.audit.report
    assert report["exact"]["verbatim_copies"] == 213
    assert report["conflicting"]["verbatim_texts"] == 25
    assert report["exact"]["copies"] >= 213 and report["near"]["families"] > 0
    train = {" ".join(t.lower().split()) for t in data.texts["train"]}
    assert not any(" ".join(t.lower().split()) in train for t in data.texts["val"])
    assert data.audit.leaks["val exact"] == 0.0


def test_the_parent_run_logs_the_audit_a_resume_with_other_dedupe_is_refused(store):
    from pipeline.errors import SearchError
    from pipeline.reporting.search_report import build_report
    from pipeline.search.run import run_search
    from pipeline.tracking.store import Tracker

    path = write_rows(store.path / "leaky.csv", leaky_rows(n_texts=80))
    data = ["data=csv", f"data.csv.path={path}", "data.max_len=16"]
    cfg = store.compose(
        *QUICK, *data, "search.name=leaky", "tuner.max_trials=1", "data.dedupe=none"
    )
    run_search(cfg)
    client = store.client()
    parent = next(r for r in store.runs() if r.data.tags["kind"] == "search")
    assert "val exact" in parent.data.tags["data_leak"]
    assert parent.data.metrics["audit_val_exact_leak"] > 0.05
    logged = json.loads(
        open(client.download_artifacts(parent.info.run_id, "data_audit.json")).read()
    )
    assert logged["settings"]["dedupe"] == "none" and logged["exact"]["copies"] > 0
    tracker = Tracker.from_config(cfg.tracking)
    tracker.connect()
    report = build_report(tracker, "leaky", None, store.path / "report", [])
    assert "## The data (audit before the first trial)" in report.markdown
    assert "**Leak:**" in report.markdown
    resumed = store.compose(
        *QUICK, *data, "search.name=leaky", "tuner.max_trials=1", "data.dedupe=exact"
    )
    with pytest.raises(SearchError, match="different search space, data or training"):
        run_search(resumed)


def test_the_numpy_buckets_are_datasketchs_lsh_buckets():
    """The banding over all signatures at once finds exactly the pairs MinHashLSH's own
    index returns for the same MinHash values and bands."""
    from datasketch import MinHash, MinHashLSH

    from pipeline.data.duplicates import _prehashed, lsh_buckets, signatures

    rng = np.random.default_rng(1)
    base = [list(rng.integers(0, 300, 15)) for _ in range(40)]
    docs = [list(set(b)) for b in base]
    docs += [list(set(b[:-1] + [int(rng.integers(300, 400))])) for b in base]  # near-copies
    matrix = signatures(docs, 64, seed=1)
    scheme = MinHash(num_perm=64, seed=1).scheme
    lsh = MinHashLSH(0.7, 64, weights=(0.05, 0.95))
    for i, row in enumerate(matrix):
        m = MinHash(num_perm=64, seed=1, hashfunc=_prehashed)
        m.update_batch(docs[i])
        assert np.array_equal(m.hashvalues, row)  # the same MinHash values
        lsh.insert(i, m)
    theirs = {
        (min(i, j), max(i, j))
        for i, row in enumerate(matrix)
        for j in lsh.query(MinHash(64, seed=1, hashvalues=row, scheme=scheme))
        if i != j
    }
    ours = {
        (min(a, b), max(a, b))
        for members in lsh_buckets(matrix, np.arange(len(docs)), lsh.hashranges)
        for a in members
        for b in members
        if a != b
    }
    assert ours == theirs and len(ours) >= 30
