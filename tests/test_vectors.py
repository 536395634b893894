"""Word vectors for the embedding: every file format to one matrix, coverage and OOV rows,
vectors trained here, frozen vs fine-tuned weights, the cache, reproduce, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config.schema import EmbeddingsConfig
from pipeline.data import vectors
from pipeline.data.prepare import PreparedData

WORDS = ["the", "cat", "Sat", "on", "mat"]
DIM = 4


def vocab_data(vocab: list[str], train_ids: np.ndarray | None = None, texts=None) -> PreparedData:
    ids = train_ids if train_ids is not None else np.asarray([[2, 3, 4, 1, 0]], dtype=np.int32)
    return PreparedData(
        name="tiny",
        x={"train": ids, "val": ids, "test": ids[:0]},
        y={"train": np.zeros(len(ids), np.int32), "val": np.zeros(len(ids), np.int32)},
        class_names=["a", "b"],
        vocab=vocab,
        fingerprint="f" * 64,
        texts={"train": texts or ["the cat sat on the mat"]},
    )


def known_vectors() -> np.ndarray:
    return np.arange(len(WORDS) * DIM, dtype=np.float32).reshape(len(WORDS), DIM) / 10


def write_glove(path: Path) -> Path:
    rows = [
        f"{w} " + " ".join(f"{v:g}" for v in vec)
        for w, vec in zip(WORDS, known_vectors(), strict=True)
    ]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    return path


def write_word2vec(path: Path, binary: bool) -> Path:
    from gensim.models import KeyedVectors

    kv = KeyedVectors(DIM)
    kv.add_vectors(WORDS, known_vectors())
    kv.save_word2vec_format(str(path), binary=binary)
    return path


def settings(**changes) -> EmbeddingsConfig:
    base = {
        "source": "file",
        "path": None,
        "format": "auto",
        "lowercase_fallback": True,
        "oov_seed": 0,
        "dim": None,
        "method": "word2vec",
        "epochs": 5,
        "window": 3,
        "min_count": 1,
        "seed": 0,
        "corpus": None,
        "corpus_column": "text",
    }
    return EmbeddingsConfig(**{**base, **changes})


DATA_CFG = SimpleNamespace(token_pattern="[\\w@#']+|[^\\w\\s]", lowercase=True)
VOCAB = ["", "[UNK]", "the", "cat", "sat", "dog"]


@pytest.fixture(autouse=True)
def fresh_memo():
    vectors._TABLES.clear()
    yield
    vectors._TABLES.clear()


@pytest.mark.parametrize(
    "name,writer",
    [
        ("v.txt", write_glove),
        ("v.txt.gz", write_glove),
        ("v.w2v.txt", lambda p: write_word2vec(p, binary=False)),
        ("v.vec", lambda p: write_word2vec(p, binary=False)),
        ("v.bin", lambda p: write_word2vec(p, binary=True)),
    ],
)
def test_every_format_loads_to_the_same_matrix(tmp_path, name, writer):
    path = writer(tmp_path / name)
    table = vectors.vector_table(
        settings(path=str(path)), vocab_data(VOCAB), DATA_CFG, DIM, tmp_path / "cache"
    )
    expected = known_vectors()
    np.testing.assert_array_equal(table.matrix[0], np.zeros(DIM))  # padding
    np.testing.assert_allclose(table.matrix[2], expected[0], atol=1e-6)  # the
    np.testing.assert_allclose(table.matrix[3], expected[1], atol=1e-6)  # cat
    np.testing.assert_allclose(table.matrix[4], expected[2], atol=1e-6)  # sat <- Sat
    assert table.dim == DIM
    assert vectors.file_dim(path, "auto") == DIM


def test_coverage_and_oov_rows_drawn_from_the_vectors_spread(tmp_path):
    path = write_glove(tmp_path / "v.txt")
    ids = np.asarray([[2, 3, 5, 1, 0], [4, 5, 0, 0, 0]], dtype=np.int32)
    table = vectors.vector_table(
        settings(path=str(path)), vocab_data(VOCAB, ids), DATA_CFG, DIM, tmp_path / "c"
    )
    assert table.vocab_coverage == pytest.approx(3 / 4)  # the, cat, sat of 4 words
    assert table.token_coverage == pytest.approx(3 / 6)  # dog x2 and one OOV missed
    dog, unk = table.matrix[5], table.matrix[1]
    assert not np.allclose(dog, unk)
    mean, std = known_vectors().mean(axis=0), known_vectors().std(axis=0)
    assert np.all(np.abs(dog - mean) < 6 * std)
    again = vectors.align(
        vectors.load_keyed_vectors(path, "auto"), VOCAB, seed=0, lowercase_fallback=True
    )[0]
    np.testing.assert_array_equal(again, table.matrix)  # same seed, same rows
    other = vectors.align(vectors.load_keyed_vectors(path, "auto"), VOCAB, 1, True)[0]
    assert not np.allclose(other[5], dog)


def test_without_the_lowercase_fallback_a_cased_word_is_oov(tmp_path):
    path = write_glove(tmp_path / "v.txt")
    kv = vectors.load_keyed_vectors(path, "auto")
    _, found = vectors.align(kv, VOCAB, 0, lowercase_fallback=False)
    assert found.tolist() == [False, False, True, True, False, False]


def test_gensims_own_test_vectors_load(tmp_path):
    from gensim.test.utils import datapath

    for name in ("lee_fasttext.vec", "euclidean_vectors.bin"):
        path = Path(datapath(name))
        kv = vectors.load_keyed_vectors(path, "auto")
        words = ["", "[UNK]", *list(kv.index_to_key[:20])]
        ids = np.arange(2, 22, dtype=np.int32)[None, :]
        table = vectors.vector_table(
            settings(path=str(path)), vocab_data(words, ids), DATA_CFG, 0, tmp_path / "c"
        )
        assert table.vocab_coverage == 1.0 and table.token_coverage == 1.0
        np.testing.assert_allclose(table.matrix[2], kv[kv.index_to_key[0]], atol=1e-6)


def test_vectors_trained_here_are_reproducible_and_use_the_corpus(tmp_path):
    texts = ["the cat sat", "the dog sat", "a cat and a dog"] * 20
    corpus = tmp_path / "extra.csv"
    corpus.write_text("text\nzebra crossing the road\nzebra stripes\n")
    data = vocab_data([*VOCAB, "zebra"], texts=texts)
    spec = settings(source="trained", corpus=str(corpus))
    first = vectors.vector_table(spec, data, DATA_CFG, 6, tmp_path / "c1")
    vectors._TABLES.clear()
    second = vectors.vector_table(spec, data, DATA_CFG, 6, tmp_path / "c2")
    np.testing.assert_array_equal(first.matrix, second.matrix)  # no cache shared
    assert first.dim == 6 and first.fingerprint == second.fingerprint
    assert first.vocab_coverage == 1.0  # zebra came from the corpus
    plain = vectors.vector_table(settings(source="trained"), data, DATA_CFG, 6, tmp_path / "c3")
    assert plain.vocab_coverage == pytest.approx(4 / 5)
    assert plain.fingerprint != first.fingerprint
    fast = vectors.vector_table(
        settings(source="trained", method="fasttext"), data, DATA_CFG, 6, tmp_path / "c4"
    )
    assert fast.vocab_coverage == 1.0  # FastText builds zebra from its n-grams


def test_the_disk_cache_is_read_by_a_second_process_and_rebuilt_when_torn(tmp_path):
    path = write_glove(tmp_path / "v.txt")
    cache = tmp_path / "cache"
    built = vectors.vector_table(settings(path=str(path)), vocab_data(VOCAB), DATA_CFG, 0, cache)
    assert "(cached)" not in built.description
    vectors._TABLES.clear()  # as a new process would start
    read = vectors.vector_table(settings(path=str(path)), vocab_data(VOCAB), DATA_CFG, 0, cache)
    assert "(cached)" in read.description
    np.testing.assert_array_equal(read.matrix, built.matrix)
    (only,) = cache.glob("*.npz")
    only.write_bytes(b"torn")
    vectors._TABLES.clear()
    rebuilt = vectors.vector_table(settings(path=str(path)), vocab_data(VOCAB), DATA_CFG, 0, cache)
    np.testing.assert_array_equal(rebuilt.matrix, built.matrix)
    # Another vocabulary or another file is another table.
    other = vectors.vector_table(
        settings(path=str(path)), vocab_data([*VOCAB, "mat"]), DATA_CFG, 0, cache
    )
    assert other.fingerprint != built.fingerprint
    write_glove(path).write_text(path.read_text().replace("0.1 ", "0.7 ", 1))
    changed = vectors.vector_table(settings(path=str(path)), vocab_data(VOCAB), DATA_CFG, 0, cache)
    assert changed.fingerprint != built.fingerprint


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no such file"),
        ("mixed", "same number of values"),
        ("empty", "empty file"),
        ("uncovered", "cover none of the vocabulary"),
        ("dim", "conflicts with the vectors' 4 dimensions"),
        ("corpus", "has no text"),
        ("no-corpus", "no such file"),
        ("no-column", "no column 'body'"),
    ],
)
def test_bad_vectors_fail_in_one_line(tmp_path, case, message):
    path = write_glove(tmp_path / "v.txt")
    spec = settings(path=str(path))
    data = vocab_data(VOCAB)
    if case == "missing":
        spec.path = str(tmp_path / "nope.txt")
    elif case == "mixed":
        path.write_text("a 1 2 3 4\nb 1 2 3\n")
    elif case == "empty":
        path.write_text("")
    elif case == "uncovered":
        data = vocab_data(["", "[UNK]", "zzz", "yyy"], np.asarray([[2, 3, 1]], np.int32))
    elif case == "dim":
        spec.dim = 8
    elif case in ("corpus", "no-corpus", "no-column"):
        corpus = tmp_path / "c.txt"
        corpus.write_text("\n \n")
        if case == "no-column":
            corpus = tmp_path / "c.csv"
            corpus.write_text("text\nhello\n")
        spec = settings(source="trained", corpus=str(corpus), corpus_column="body")
        if case == "no-corpus":
            spec.corpus = str(tmp_path / "missing.txt")
    with pytest.raises(vectors.VectorsError) as err:
        vectors.vector_table(spec, data, DATA_CFG, DIM, tmp_path / "cache")
    text = str(err.value)
    assert message in text and "\n" not in text


def test_frozen_embedding_stays_and_fine_tuned_moves(tmp_path):
    from pipeline.models.build import build_model

    rng = np.random.default_rng(0)
    start = rng.normal(size=(20, 8)).astype(np.float32)
    start[0] = 0
    x = rng.integers(1, 20, size=(64, 10)).astype(np.int32)
    y = rng.integers(0, 2, size=64).astype(np.int32)
    base = {
        "embedding_dim": 8,
        "units": 4,
        "pooling": "mean",
        "attention_activation": "tanh",
        "attention_hidden": 0,
        "dropout": 0.0,
        "dense_units": 0,
    }
    for trainable in (False, True):
        settings_ = {**base, "embedding_trainable": trainable}
        model = build_model(settings_, 20, 2, learning_rate=0.05, embeddings=start)
        np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0], start)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        after = model.get_layer("embedding").get_weights()[0]
        if trainable:
            assert np.abs(after - start).max() > 1e-3
        else:
            np.testing.assert_array_equal(after, start)


# ---------------------------------------------------------------- in a search


def synthetic_vocab_file(path: Path, dim: int = 8) -> Path:
    """GloVe-format vectors for the quick preset's filler words (w0..), cased, plus words
    the data never uses."""
    rng = np.random.default_rng(1)
    words = [f"W{i}" for i in range(300)] + [f"k{c}_{j}" for c in range(3) for j in range(4)]
    words += ["unused", "other"]
    rows = [w + " " + " ".join(f"{v:.4f}" for v in rng.normal(size=dim)) for w in words]
    path.write_text("\n".join(rows) + "\n")
    return path


QUICK = ["+experiment=quick", "tracking.log_model=false", "attention.enabled=false"]


def test_a_search_on_file_vectors_logs_coverage_reproduces_and_refuses_other_vectors(store, capsys):
    from pipeline.errors import SearchError
    from pipeline.search import reproduce_run, run_search

    path = synthetic_vocab_file(store.path / "vectors.txt")
    overrides = [
        *QUICK,
        "search.name=vec",
        "tuner.max_trials=2",
        "model.embeddings.source=file",
        f"model.embeddings.path={path}",
        "~search_space.embedding_dim",
        "+search_space.embedding_trainable={type: boolean}",
    ]
    run_search(store.compose(*overrides))
    out = capsys.readouterr().out
    assert "vectors (file): vectors.txt (glove, 314 x 8)" in out
    runs = store.runs()
    parent = next(r for r in runs if r.data.tags["kind"] == "search")
    assert 0.2 < parent.data.metrics["vectors_file_vocab_coverage"] < 1.0
    assert parent.data.metrics["vectors_file_dim"] == 8
    trials = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert {r.data.params["model.embedding_dim"] for r in trials} == {"8"}  # the file's
    assert all(r.data.tags["vectors"] for r in trials)
    from pipeline.tracking import Tracker

    tracker = Tracker.from_config(store.compose().tracking)
    tracker.connect()
    record = tracker.read_trial_record(trials[0].info.run_id)
    assert record.vectors and record.vectors.startswith(trials[0].data.tags["vectors"])
    assert {r.data.params["model.embedding_trainable"] for r in trials} <= {"True", "False"}

    again = reproduce_run(store.compose(), trials[0].info.run_id)
    assert again.matches, again.table

    # The same search resumed over other vectors at the same path is not the same search.
    path.write_text(path.read_text().replace("unused", "unused2"))
    with pytest.raises(SearchError, match="not be comparable"):
        run_search(store.compose(*overrides))
    with pytest.raises(SearchError, match="word vectors differ"):
        reproduce_run(store.compose(), trials[0].info.run_id)


# ---------------------------------------------------------------- config


def test_the_source_is_a_searchable_knob_pinned_by_an_explicit_value():
    from pipeline.config import compose_config, search_space_dims

    searched = ["+search_space.embeddings.source={type: choice, values: [random, trained]}"]
    dims = search_space_dims(compose_config(searched).search_space)
    assert dims["embeddings.source"]["values"] == ["random", "trained"]
    pinned = compose_config([*searched, "model.embeddings.source=trained"])
    assert "embeddings.source" not in search_space_dims(pinned.search_space)
    assert "embeddings" not in pinned.search_space  # no empty group left behind
    preset = compose_config(["+experiment=pretrained_vectors"])
    assert search_space_dims(preset.search_space)["embeddings.source"]["values"] == [
        "random",
        "trained",
        "glove",
    ]
    assert preset.model.embeddings.method == "fasttext"  # a preset's setting pins nothing


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.embeddings.source=file"], "model.embeddings.path: needed with source=file"),
        (
            ["model.embeddings.source=file", "model.embeddings.path=v.txt"],
            "search_space.embedding_dim: the vectors (file) fix the embedding size",
        ),
        (["model.embeddings.source=bert"], "model.embeddings.source: unknown source 'bert'"),
        (
            ["model.embeddings.source=glove"],
            "search_space.embedding_dim: the vectors (glove) fix the embedding size",
        ),
        (["model.embeddings.format=csv"], "model.embeddings.format"),
        (["model.embeddings.source=trained", "model.embeddings.epochs=0"], "must be >= 1"),
        (["model.recurrent_dropout=1.5"], "model.recurrent_dropout: must be in [0, 1)"),
        (
            ["+search_space.embeddings.source={type: choice, values: [random, bert]}"],
            "unknown embeddings.source ['bert']",
        ),
    ],
)
def test_bad_embedding_settings_are_one_line(overrides, message):
    from pipeline.config import compose_config
    from pipeline.runtime.checks import validate_config

    with pytest.raises(Exception) as err:
        validate_config(compose_config(overrides))
    assert message in str(err.value).splitlines()[0] or message in str(err.value)
