"""The named pretrained word-vector sets (`model.embeddings.source: glove`): one entry each
in `vector_sets.yaml` beside this file, so another set (a 300-d one, a fastText) is one
entry. Config-level facts only (names, packages, checksums); reading and checking the
files is `pipeline.data.named_vectors`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

REGISTRY = Path(__file__).with_name("vector_sets.yaml")


@dataclass(frozen=True)
class NamedVectors:
    name: str
    package: str  # the pip distribution
    module: str  # its import name: the files are found beside its __init__.py
    vectors: str  # a float32 .npy, rows x dim
    words: str  # a parquet word list: row i names the array's row i
    words_column: str
    sha256: str
    words_sha256: str
    shape: tuple[int, int]
    check_word: str
    check_values: tuple[float, ...]
    description: str
    licence: str
    lowercase_words: bool = False  # every word lower-case: a vocabulary word's lower-case
    # match is the word itself (no second index to build)

    @property
    def dim(self) -> int:
        return int(self.shape[1])


NAMED: dict[str, NamedVectors] = {}


@cache
def _load_registry() -> None:
    for name, entry in OmegaConf.to_container(OmegaConf.load(REGISTRY)).items():
        shape, values = tuple(entry.pop("shape")), tuple(entry.pop("check_values"))
        NAMED.setdefault(name, NamedVectors(name, shape=shape, check_values=values, **entry))


def register(entry: NamedVectors) -> None:
    """Another named set (a plugin's, a test's), as an entry of the YAML file would be."""
    _load_registry()
    NAMED[entry.name] = entry


def named_sets() -> dict[str, NamedVectors]:
    _load_registry()
    return NAMED


def named(name: str) -> NamedVectors | None:
    return named_sets().get(str(name))


def source_names() -> list[str]:
    """Every value `model.embeddings.source` takes: the built-in sources, then the sets."""
    from pipeline.config.schema import EmbeddingSource

    return [*(s.value for s in EmbeddingSource), *named_sets()]
