"""The data section of the config schema (`data.*`): loaders' sections, the audit and
dedupe settings. Types and allowed values only, as in `schema.py`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EncodingErrors(StrEnum):
    strict = "strict"  # fail naming the file
    replace = "replace"  # substitute bad bytes


class SyntheticRule(StrEnum):
    negation = "negation"  # keys of another class after "not" do not count: order decides
    majority = "majority"  # the class with the most keys: a bag of words solves it


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"  # inverse class frequency on the training split


@dataclass
class SyntheticConfig:
    rule: SyntheticRule
    n_examples: int
    n_classes: int
    min_tokens: int
    max_tokens: int
    filler_vocab: int
    keys_per_class: int
    min_keys: int
    max_keys: int
    other_class_keys: int
    distractor_tokens: int
    distractors_per_example: int
    label_noise: float
    seed: int


@dataclass
class TableConfig:
    """A table of texts and labels in one file (data.jsonl, data.parquet; data.csv adds its
    own keys): which columns, which labels, and how they are named."""

    path: str | None
    text_column: str
    label_column: str
    labels: list[str] | None
    label_map: dict[str, str]
    drop_missing_labels: bool
    label_names: Any  # null | a list | a file of one name a line: numeric label i -> names[i]


@dataclass
class CsvConfig(TableConfig):
    sep: str  # auto (tab for .tsv/.tab, else comma) | tab | comma | semicolon | pipe | a character
    header: bool  # false: no header line; columns are named by position (0, 1, ...)


@dataclass
class TextDirConfig:
    root: str | None
    train_split: str
    test_split: str | None
    extension: str


class Dedupe(StrEnum):
    none = "none"  # every row stays; split row by row
    exact = "exact"  # repeated text+label dropped; rows of one text share a split
    near = "near"  # also near-copy families (MinHash LSH) share a split


class ConflictingLabels(StrEnum):
    keep = "keep"
    drop = "drop"  # every row of a text seen with two or more labels


@dataclass
class NearDuplicatesConfig:
    threshold: float  # Jaccard similarity of shingle sets, in (0, 1]
    shingle_size: int  # tokens per shingle
    num_perm: int  # MinHash permutations
    seed: int
    miss_weight: float  # in (0, 1): weight of missed pairs against false candidates


@dataclass
class AuditConfig:
    enabled: bool
    near_duplicates: bool
    max_leak: float
    examples: int
    label_issues: bool
    label_issues_folds: int
    label_issues_c: float
    label_issues_max: int


@dataclass
class DataConfig:
    loader: str
    name: str
    max_len: int
    vocab_size: int
    min_count: int
    lowercase: bool
    token_pattern: str
    val_fraction: float
    test_fraction: float
    split_seed: int
    encoding_errors: EncodingErrors
    class_weight: ClassWeight
    strip_html: bool
    dedupe: Dedupe
    conflicting_labels: ConflictingLabels
    near_duplicates: NearDuplicatesConfig
    audit: AuditConfig
    # One section per loader; only the chosen loader's YAML fills its own.
    synthetic: SyntheticConfig | None = None
    csv: CsvConfig | None = None
    text_dir: TextDirConfig | None = None
    jsonl: TableConfig | None = None
    parquet: TableConfig | None = None
