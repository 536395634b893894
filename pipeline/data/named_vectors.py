"""Named pretrained word vectors shipped by pip packages (`model.embeddings.source: glove`).

A named set is one entry of `pipeline/config/vector_sets.yaml`: the package, its array
(a float32 `.npy`, rows x dim) and word list (parquet), their sha256 and the first values
of one known row. The packages are third-party repackagings, so nothing is used unchecked:
the files are hashed and the row compared before first use, then a stamp in the vectors
cache (keyed by each file's path, size and mtime) spares the next process the hashing.
The array is read through a memory map: a vocabulary touches only its own rows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config.vector_sets import NamedVectors
from pipeline.data.loaders import DataError

STAMP_LAYOUT = 1


class NamedVectorsError(DataError):
    """A named set that is missing, altered or unknown; the message says which and why."""


def find_spec(module: str):
    """The installed package's import spec, or None (without importing it)."""
    return importlib.util.find_spec(module)


def locate(entry: NamedVectors) -> tuple[Path, Path]:
    """(array, word list) of the installed package; one line naming the package to
    install when it is not there."""
    spec = find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise NamedVectorsError(
            f"model.embeddings.source={entry.name}: the package {entry.package} is not "
            f"installed (pip install -c constraints.txt {entry.package}; `make` installs it "
            "with the project)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    paths = root / entry.vectors, root / entry.words
    for path in paths:
        if not path.is_file():
            raise NamedVectorsError(
                f"model.embeddings.source={entry.name}: {path} is missing from the installed "
                f"{entry.package}; reinstall it (pip install --force-reinstall "
                f"-c constraints.txt {entry.package})"
            )
    return paths


def sha256_file(path: Path) -> str:
    """A file's sha256, read in 4 MB blocks (also the vector files' fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomically(path: Path, obj) -> None:
    """A stamp another process reads whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_arrays_atomically(path: Path, **arrays: np.ndarray) -> None:
    """An .npz cache another process reads whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_identity(path: Path) -> dict[str, object]:
    """What says a file is the one checked before: where it is, its size and mtime."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _words(path: Path, column: str) -> list[str]:
    import pyarrow.parquet as pq

    return [str(w) for w in pq.read_table(path, columns=[column]).column(0).to_pylist()]


def verify(entry: NamedVectors, array: np.ndarray, words: list[str], paths) -> dict:
    """Checksums, shape, one known row. Returns the stamp: what was checked, and the
    array's per-dimension mean and spread (OOV rows are drawn from them), so a later
    alignment never reads the whole array."""
    vectors_path, words_path = paths
    for path, expected in ((vectors_path, entry.sha256), (words_path, entry.words_sha256)):
        found = sha256_file(path)
        if found != expected:
            raise NamedVectorsError(
                f"model.embeddings.source={entry.name}: {path} has sha256 {found[:16]}..., "
                f"not the {expected[:16]}... recorded for {entry.package}; refusing vectors "
                "that are not the named set (reinstall the pinned package)"
            )
    if tuple(array.shape) != entry.shape or len(words) != entry.shape[0]:
        raise NamedVectorsError(
            f"model.embeddings.source={entry.name}: {array.shape} vectors and {len(words)} "
            f"words, expected {entry.shape}"
        )
    try:
        row = words.index(entry.check_word)
    except ValueError:
        row = -1
    head = array[row, : len(entry.check_values)] if row >= 0 else None
    if head is None or not np.allclose(head, entry.check_values, atol=1e-5):
        raise NamedVectorsError(
            f"model.embeddings.source={entry.name}: the row of '{entry.check_word}' is not "
            f"the known one ({list(entry.check_values)}...)"
        )
    mean, std = _mean_std(vectors_path)
    return {
        "layout": STAMP_LAYOUT,
        "files": [file_identity(p) for p in paths],
        "sha256": [entry.sha256, entry.words_sha256],
        "mean": mean.tolist(),
        "std": std.tolist(),
    }


def _mean_std(path: Path, block_bytes: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and spread of a 2-d .npy array, read in blocks through plain
    reads (a whole-array std holds a float64 copy, and a memory map every page, at once).
    Row- and column-major files alike (the GloVe wheel's is column-major)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = header(f)
        if len(shape) != 2:
            raise NamedVectorsError(f"{path}: not a 2-d array ({shape})")
        rows, dim = shape
        if fortran:  # column after column
            mean, std = np.zeros(dim), np.zeros(dim)
            for j in range(dim):
                column = np.fromfile(f, dtype=dtype, count=rows).astype(np.float64)
                mean[j], std[j] = column.mean(), column.std()
            return mean, std
        step = max(1, block_bytes // (dim * dtype.itemsize))
        total, sums, squares = 0, np.zeros(dim), np.zeros(dim)
        while (block := np.fromfile(f, dtype=dtype, count=step * dim)).size:
            block = block.reshape(-1, dim).astype(np.float64)
            total += len(block)
            sums += block.sum(axis=0)
            squares += np.square(block).sum(axis=0)
    mean = sums / max(total, 1)
    return mean, np.sqrt(np.maximum(squares / max(total, 1) - mean**2, 0.0))


@dataclass
class ArrayVectors:
    """What `vectors.align` reads of gensim's KeyedVectors, over a memory-mapped array."""

    vectors: np.ndarray
    key_to_index: dict[str, int]
    mean: np.ndarray
    std: np.ndarray
    lowered: dict[str, int] | None  # lower-case word -> row, when the set is lower-case

    def __len__(self) -> int:
        return len(self.key_to_index)

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])


def load(entry: NamedVectors, cache_dir: Path) -> ArrayVectors:
    """The named set, checked (once per installed file version: the stamp in `cache_dir`)."""
    paths = locate(entry)
    try:
        array = np.load(paths[0], mmap_mode="r")
        words = _words(paths[1], entry.words_column)
    except (OSError, ValueError, KeyError) as err:  # pyarrow's errors are among these
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NamedVectorsError(
            f"model.embeddings.source={entry.name}: the installed {entry.package} is not "
            f"readable ({first}); reinstall it (pip install --force-reinstall "
            f"-c constraints.txt {entry.package})"
        ) from None
    stamp_path = cache_dir / f"verified-{entry.name}.json"
    stamp = None
    if stamp_path.is_file():
        try:
            stamp = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            stamp = None
    current = {
        "files": [file_identity(p) for p in paths],
        "sha256": [entry.sha256, entry.words_sha256],
    }
    if (
        stamp is None
        or stamp.get("layout") != STAMP_LAYOUT
        or {k: stamp.get(k) for k in current} != current
    ):
        stamp = verify(entry, array, words, paths)
        write_json_atomically(stamp_path, stamp)
    index: dict[str, int] = {}
    for i, word in enumerate(words):
        index.setdefault(word, i)  # the first (most frequent) spelling wins
    lowered = index if entry.lowercase_words else None
    return ArrayVectors(array, index, np.asarray(stamp["mean"]), np.asarray(stamp["std"]), lowered)
