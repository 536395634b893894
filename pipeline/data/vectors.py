"""Word vectors for the embedding layer, aligned once to a search's vocabulary.

`model.embeddings.source` says where the embedding layer starts from: `random` (Keras'
own initializer, today's runs), `file` (GloVe text, word2vec text or binary, fastText
`.vec`, plain or gzipped, read by gensim's `KeyedVectors.load_word2vec_format`),
`trained` (gensim `Word2Vec` / `FastText` trained here on the training split, plus an
optional unlabeled corpus: no download) or a named set installed with the project
(`glove`: `pipeline.config.vector_sets`, read by `pipeline.data.named_vectors`). A table
is aligned to a vocabulary once and cached on disk (`<tuner.directory>/vectors/`), keyed
by the source's fingerprint (the file's sha256, the named set's recorded sha256, or the
training settings and data) and the vocabulary's hash, so a
resumed search, cluster workers and `pipeline.reproduce` reuse it instead of reading a
large file again. Row 0 (padding) is zero; rows the vectors lack (OOV) are drawn from
the vectors' own per-dimension mean and spread with `oov_seed`. No TensorFlow here.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.schema import DataConfig, EmbeddingsConfig
from pipeline.config.vector_sets import named, source_names
from pipeline.data import named_vectors
from pipeline.data.loaders import DataError
from pipeline.data.prepare import PreparedData, Tokenizer

RANDOM, FILE, TRAINED = "random", "file", "trained"
SOURCES = (RANDOM, FILE, TRAINED)
FORMATS = ("auto", "glove", "word2vec", "word2vec_binary")
METHODS = ("word2vec", "fasttext")
# Settings of `model.embeddings` that shape a `trained` table (and so its cache key).
TRAINING_KEYS = ("method", "epochs", "window", "min_count", "seed", "corpus", "corpus_column")
CACHE_LAYOUT = 1  # bump when the aligned table's recipe changes
MEMO_TABLES = 4  # aligned tables kept in memory (sources x replicate splits)


class VectorsError(DataError):
    """Unusable word vectors or corpus; the message names the file and the problem."""


@dataclass(frozen=True)
class VectorTable:
    """An embedding matrix for one vocabulary, and where it came from."""

    source: str  # file | trained | a named set (glove)
    matrix: np.ndarray  # (vocabulary, dim) float32; row 0 zero
    fingerprint: str  # source + vocabulary + alignment: a trial's record carries it
    vocab_coverage: float  # share of the vocabulary (padding and OOV rows excluded) found
    token_coverage: float  # share of the training split's tokens whose row was found
    description: str  # what the vectors are, for the start-up line

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def line(self) -> str:
        return (
            f"vectors ({self.source}): {self.description}; coverage {self.vocab_coverage:.1%} "
            f"of the vocabulary, {self.token_coverage:.1%} of training tokens; "
            f"fingerprint {self.fingerprint[:12]}"
        )

    def metrics(self) -> dict[str, float]:
        """What the parent run logs (one pair of metrics per source)."""
        return {
            f"vectors_{self.source}_vocab_coverage": self.vocab_coverage,
            f"vectors_{self.source}_token_coverage": self.token_coverage,
            f"vectors_{self.source}_dim": float(self.dim),
        }


# ---------------------------------------------------------------- fingerprints


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime in this process)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = named_vectors.sha256_file(path)
    return _FILE_HASHES[key]


def vocab_hash(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8", "surrogatepass")).hexdigest()


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- reading a file


def _opener(path: Path):
    return gzip.open if path.suffix == ".gz" else open


def detect_format(path: Path, fmt: str) -> str:
    """`auto`: `.bin` (or `.bin.gz`) is word2vec binary; a first line of two integers is
    a word2vec / fastText header; anything else is GloVe (no header)."""
    if fmt != "auto":
        return fmt
    if path.name.endswith((".bin", ".bin.gz")):
        return "word2vec_binary"
    try:
        with _opener(path)(path, "rt", encoding="utf-8", errors="replace") as f:
            first = f.readline().split()
    except OSError as err:  # gzip.BadGzipFile is an OSError
        raise VectorsError(f"{path}: cannot read word vectors ({err})") from None
    if not first:
        raise VectorsError(f"{path}: empty file, no word vectors")
    if len(first) == 2 and all(part.isdigit() for part in first):
        return "word2vec"
    return "glove"


def file_dim(path: Path, fmt: str) -> int:
    """The vectors' dimension from the file's first line (no full read): what the model's
    embedding size follows."""
    if not path.is_file():
        raise VectorsError(f"model.embeddings.path: no such file {path}")
    kind = detect_format(path, fmt)
    with _opener(path)(path, "rb") as f:
        first = f.readline().split()
    if kind == "glove":
        return len(first) - 1
    if len(first) != 2 or not all(p.isdigit() for p in first):
        raise VectorsError(f"{path}: no 'count dimension' header line for {kind} vectors")
    return int(first[1])


def load_keyed_vectors(path: Path, fmt: str):
    """The file as gensim `KeyedVectors`; VectorsError in one line for a missing file, an
    unknown format, rows of mixed dimensions or no vectors at all."""
    from gensim.models import KeyedVectors

    if not path.is_file():
        raise VectorsError(f"model.embeddings.path: no such file {path}")
    if fmt not in FORMATS:
        raise VectorsError(
            f"model.embeddings.format: unknown format '{fmt}' (known: {', '.join(FORMATS)})"
        )
    kind = detect_format(path, fmt)
    try:
        kv = KeyedVectors.load_word2vec_format(
            str(path),
            binary=kind == "word2vec_binary",
            no_header=kind == "glove",
            unicode_errors="replace",
        )
    except (ValueError, EOFError, OSError, UnicodeDecodeError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VectorsError(
            f"{path}: not readable as {kind} vectors ({first}); rows must all have the "
            "same number of values (model.embeddings.format says which format)"
        ) from None
    if len(kv) == 0 or kv.vector_size == 0:
        raise VectorsError(f"{path}: no word vectors in the file")
    return kv


# ---------------------------------------------------------------- training here


def _stable_hash(text: str) -> int:
    """gensim seeds each word's start vector with hashfxn(word + seed); Python's `hash`
    changes per process (PYTHONHASHSEED), this does not."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def corpus_texts(settings: EmbeddingsConfig) -> Iterator[str]:
    """The unlabeled corpus: a text file (one document a line) or a CSV column."""
    path = Path(str(settings.corpus))
    if not path.is_file():
        raise VectorsError(f"model.embeddings.corpus: no such file {path}")
    opener = _opener(path)
    if path.name.endswith((".csv", ".csv.gz")):
        column = settings.corpus_column
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise VectorsError(
                    f"{path}: no column '{column}' (model.embeddings.corpus_column); "
                    f"columns: {', '.join(reader.fieldnames or [])}"
                )
            for row in reader:
                yield row[column] or ""
        return
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        yield from f


def train_keyed_vectors(sentences: list[list[str]], settings: EmbeddingsConfig, dim: int):
    """Word2Vec or FastText on these token lists; one worker and a process-independent
    hash, so the same settings give the same vectors in every process."""
    from gensim.models import FastText, Word2Vec

    method = settings.method
    if method not in METHODS:
        raise VectorsError(
            f"model.embeddings.method: unknown '{method}' (known: {', '.join(METHODS)})"
        )
    sentences = [s for s in sentences if s]
    if not sentences:
        raise VectorsError("model.embeddings: no text to train vectors on (every text is empty)")
    cls = Word2Vec if method == "word2vec" else FastText
    model = cls(
        sentences=sentences,
        vector_size=dim,
        window=int(settings.window),
        min_count=int(settings.min_count),
        epochs=int(settings.epochs),
        seed=int(settings.seed),
        workers=1,
        hashfxn=_stable_hash,
        sg=1,
    )
    return model.wv


# ---------------------------------------------------------------- alignment


def align(
    kv, vocab: list[str], seed: int, lowercase_fallback: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix (len(vocab), dim), found (len(vocab),) bool). Row 0 zero; rows the vectors
    lack drawn from N(mean, std) of the vectors, per dimension, with `seed`. A FastText
    model gives every word a vector (from its character n-grams)."""
    vectors = kv.vectors
    dim = vectors.shape[1]
    mean = getattr(kv, "mean", None)  # a named set's, recorded when it was checked
    if mean is None:
        mean = vectors.mean(axis=0, dtype=np.float64)
    std = getattr(kv, "std", None)
    if std is None:
        std = vectors.std(axis=0, dtype=np.float64)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(mean, std, size=(len(vocab), dim)).astype(np.float32)
    matrix[0] = 0.0
    found = np.zeros(len(vocab), dtype=bool)
    index = kv.key_to_index
    lowered: dict[str, int] | None = getattr(kv, "lowered", None)  # a named set's own
    subwords = hasattr(kv, "get_vector") and getattr(kv, "bucket", 0) > 0  # FastText
    for row, word in enumerate(vocab):
        if row < 2:  # padding, OOV: no word of their own
            continue
        at = index.get(word)
        if at is None and lowercase_fallback:
            if lowered is None:  # first hit wins: files list frequent spellings first
                lowered = {}
                for key, i in index.items():
                    lowered.setdefault(str(key).lower(), i)
            at = lowered.get(word.lower())
        if at is not None:
            matrix[row] = vectors[at]
            found[row] = True
        elif subwords:
            matrix[row] = kv.get_vector(word)
            found[row] = True
    return matrix, found


def coverage(found: np.ndarray, train_ids: np.ndarray) -> tuple[float, float]:
    """(share of vocabulary words found, share of training tokens whose row was found;
    tokens mapped to OOV count as not found)."""
    words = found[2:]
    vocab_share = float(words.mean()) if len(words) else 0.0
    tokens = train_ids[train_ids > 0]
    token_share = float(found[tokens].mean()) if tokens.size else 0.0
    return vocab_share, token_share


# ---------------------------------------------------------------- the table of a search


_TABLES: dict[str, VectorTable] = {}


def table_key(
    settings: EmbeddingsConfig, data: PreparedData, data_cfg: DataConfig, dim: int
) -> tuple[str, str]:
    """(cache key of the aligned table, what the vectors are) without reading vectors."""
    source = settings.source
    common = {
        "layout": CACHE_LAYOUT,
        "vocab": vocab_hash(data.vocab),
        "oov_seed": int(settings.oov_seed),
        "lowercase_fallback": bool(settings.lowercase_fallback),
    }
    if source == FILE:
        if not settings.path:
            raise VectorsError("model.embeddings.path: needed with model.embeddings.source=file")
        path = Path(str(settings.path))
        if not path.is_file():
            raise VectorsError(f"model.embeddings.path: no such file {path}")
        fmt = detect_format(path, settings.format) if settings.format in FORMATS else "?"
        return _key({**common, "file": file_fingerprint(path), "format": fmt}), path.name
    if source == TRAINED:
        corpus = settings.corpus
        extra = (
            file_fingerprint(Path(str(corpus))) if corpus and Path(str(corpus)).is_file() else None
        )
        training = {k: getattr(settings, k) for k in TRAINING_KEYS}
        text = {k: getattr(data_cfg, k) for k in ("token_pattern", "lowercase")}
        key = _key(
            {
                **common,
                "training": training,
                "corpus": extra,
                "data": data.fingerprint,
                "tokenizer": text,
                "dim": dim,
            }
        )
        what = f"{settings.method} trained here on the training split" + (
            f" + {Path(str(corpus)).name}" if corpus else ""
        )
        return key, what
    entry = named(source)
    if entry is not None:  # the recorded checksums stand for the files (checked at first use)
        key = _key({**common, "named": source, "sha256": [entry.sha256, entry.words_sha256]})
        return key, entry.description
    raise VectorsError(
        f"model.embeddings.source: unknown source '{source}' (known: {', '.join(source_names())})"
    )


def vector_table(
    settings: EmbeddingsConfig,
    data: PreparedData,
    data_cfg: DataConfig,
    dim: int,
    cache_dir: Path,
) -> VectorTable | None:
    """The aligned table of `settings` (a `model.embeddings` section) for `data`'s
    vocabulary, or None for `random`. Built once: memoised in this process and cached on
    disk in `cache_dir` (resumed searches, cluster workers, reproduce)."""
    source = settings.source
    if source == RANDOM:
        return None
    key, what = table_key(settings, data, data_cfg, dim)
    if key in _TABLES:
        return _TABLES[key]
    cache = cache_dir / f"{key[:32]}.npz"
    table = _read_cache(cache, source, key)
    if table is None:
        table = _build(settings, data, data_cfg, dim, key, what, cache_dir)
        named_vectors.write_arrays_atomically(
            cache,
            matrix=table.matrix,
            coverage=np.asarray([table.vocab_coverage, table.token_coverage]),
            description=np.asarray(table.description),
        )
    if table.vocab_coverage == 0:
        raise VectorsError(
            f"model.embeddings: the vectors ({what}) cover none of the vocabulary's "
            f"{len(data.vocab) - 2} words; check the file's language, case and tokenization"
        )
    wanted = settings.dim
    if wanted is not None and int(wanted) != table.dim:
        raise VectorsError(
            f"model.embeddings.dim={wanted} conflicts with the vectors' {table.dim} "
            f"dimensions ({what}); leave it null to follow the vectors"
        )
    if len(_TABLES) >= MEMO_TABLES:  # a few tables at a time: memory stays flat
        _TABLES.clear()
    _TABLES[key] = table
    return table


def _read_cache(path: Path, source: str, key: str) -> VectorTable | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as saved:
            vocab_share, token_share = (float(v) for v in saved["coverage"])
            return VectorTable(
                source,
                saved["matrix"].astype(np.float32),
                key,
                vocab_share,
                token_share,
                str(saved["description"]) + " (cached)",
            )
    except (OSError, KeyError, ValueError):  # a torn or foreign file: rebuild over it
        return None


def _build(
    settings: EmbeddingsConfig,
    data: PreparedData,
    data_cfg: DataConfig,
    dim: int,
    key: str,
    what: str,
    cache_dir: Path,
) -> VectorTable:
    source = settings.source
    entry = named(source)
    if entry is not None:
        kv = named_vectors.load(entry, cache_dir)
        what = f"{what} ({len(kv)} x {kv.vector_size})"
    elif source == FILE:
        path = Path(str(settings.path))
        kv = load_keyed_vectors(path, settings.format)
        what = f"{path.name} ({detect_format(path, settings.format)}, {len(kv)} x {kv.vector_size})"
    else:
        tokenizer = Tokenizer(data_cfg.token_pattern, data_cfg.lowercase)
        sentences = [tokenizer(t) for t in data.texts["train"]]
        if settings.corpus:
            extra = [tokenizer(t) for t in corpus_texts(settings)]
            if not any(extra):
                raise VectorsError(
                    f"model.embeddings.corpus: {settings.corpus} has no text "
                    f"(column {settings.corpus_column!r} for a CSV)"
                )
            sentences += extra
        kv = train_keyed_vectors(sentences, settings, dim)
        what = f"{what} ({len(kv)} x {kv.vector_size})"
    matrix, found = align(kv, data.vocab, int(settings.oov_seed), bool(settings.lowercase_fallback))
    vocab_share, token_share = coverage(found, data.x["train"])
    return VectorTable(source, matrix, key, vocab_share, token_share, what)
