"""From a loader's raw texts to model input: tokenization, vocabulary, splits, fingerprint.

The same for every loader. No TensorFlow here: tokenization is a regex so that tests,
reports and config checks stay fast.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import to_plain
from pipeline.config.schema import DataConfig
from pipeline.data.audit import DataAudit, audit_data, strip_html
from pipeline.data.duplicates import resolve_duplicates, stratified_group_split
from pipeline.data.loaders import LOADERS, DataError, RawData

PAD, OOV = "", "[UNK]"  # ids 0 and 1
# Loader settings left out of the fingerprint: what they change is in the rows themselves
# (so adding one does not make earlier searches incomparable).
UNHASHED_LOADER_KEYS = ("drop_missing_labels",)
# Settings that shape the data only away from these values: at them the fingerprint is
# the one computed before the settings existed, so earlier runs still reproduce.
NEUTRAL_SETTINGS = {"strip_html": False, "dedupe": "none", "conflicting_labels": "keep"}
UNHASHED_SETTINGS = ("audit",)  # counts what is there, changes nothing


@dataclass
class PreparedData:
    name: str
    x: dict[str, np.ndarray]  # split -> int32 token ids (n, max_len), 0 = padding
    y: dict[str, np.ndarray]  # split -> int32 class index
    class_names: list[str]
    vocab: list[str]
    fingerprint: str
    # split -> bool (n, max_len), True where a planted key token sits.
    key_masks: dict[str, np.ndarray] | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    # split -> example ids in the loaded data set (stable whatever the split)
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the loader's, for the data line
    audit: DataAudit | None = None  # data.audit: duplicates, leaks, labels (data_audit.json)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def max_len(self) -> int:
        return int(self.x["train"].shape[1])


class Tokenizer:
    """Regex tokenizer shared by all loaders (and by plots, to decode texts)."""

    def __init__(self, pattern: str, lowercase: bool) -> None:
        self.regex = re.compile(pattern)
        self.lowercase = lowercase

    def __call__(self, text: str) -> list[str]:
        return self.regex.findall(text.lower() if self.lowercase else text)


@dataclass
class TextEncoder:
    """Raw text to token ids exactly as the search prepared its data: markup stripped
    (`data.strip_html`), the regex tokenizer, the training vocabulary, cut at `max_len`.
    What a served model carries (as JSON) to take raw text."""

    vocab: list[str]
    token_pattern: str
    lowercase: bool
    strip_html: bool
    max_len: int

    def __post_init__(self) -> None:
        self._tokenize = Tokenizer(self.token_pattern, self.lowercase)
        self._index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def of(cls, data_cfg: DataConfig, vocab: list[str]) -> TextEncoder:
        return cls(
            list(vocab),
            str(data_cfg.token_pattern),
            bool(data_cfg.lowercase),
            bool(data_cfg.strip_html),
            int(data_cfg.max_len),
        )

    def to_dict(self) -> dict:
        return {
            "vocab": self.vocab,
            "token_pattern": self.token_pattern,
            "lowercase": self.lowercase,
            "strip_html": self.strip_html,
            "max_len": self.max_len,
        }

    def tokens(self, text: str) -> list[str]:
        return self._tokenize(strip_html(text) if self.strip_html else text)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[list[str]]]:
        """(ids (n, max_len), each text's tokens before the cut)."""
        token_lists = [self.tokens(t) for t in texts]
        out = encode(token_lists, self.vocab, self.max_len, self._index)
        return out, token_lists


def build_vocab(token_lists: list[list[str]], vocab_size: int, min_count: int) -> list[str]:
    """Index 0 padding, 1 OOV, then the most frequent training tokens (ties by name)."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, OOV] + words[: vocab_size - 2]


def encode(
    token_lists: list[list[str]],
    vocab: list[str],
    max_len: int,
    index: dict[str, int] | None = None,
) -> np.ndarray:
    """Token ids (n, max_len), 0-padded, cut at max_len; `index` (word -> id) when the
    caller keeps one (a served model encodes every request with the same vocabulary)."""
    index = index if index is not None else {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(token_lists), max_len), dtype=np.int32)
    for row, toks in enumerate(token_lists):
        ids = [index.get(t, 1) for t in toks[:max_len]]
        out[row, : len(ids)] = ids
    return out


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Deterministic per-class split of indices into train/val/test: the group-aware split
    with one row per group (the same draws as before groups existed, tested)."""
    return stratified_group_split(labels, np.arange(len(labels)), val_fraction, test_fraction, seed)


def fingerprint(raw: RawData, preprocessing: dict) -> str:
    """sha256 of the raw examples and the preprocessing config that shapes them."""
    h = hashlib.sha256()
    for text, label in zip(raw.texts, raw.labels, strict=True):
        h.update(label.encode())
        h.update(b"\t")
        h.update(text.encode("utf-8", errors="surrogatepass"))
        h.update(b"\n")
    if raw.fixed_split is not None:
        h.update(",".join(raw.fixed_split).encode())
    h.update(repr(sorted(preprocessing.items())).encode())
    return h.hexdigest()


def data_name(name: str, loader: str, source: str) -> str:
    """What tables, tags and reports call the data: its preset's name, or for the generic
    presets (`data=csv`, `data=text_dir`, named after their loader) the file's or
    folder's own name (`reviews.csv` -> `reviews`)."""
    if name != loader or loader == "synthetic":
        return name
    stem = Path(source).name.split(".")[0]
    return stem or name


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse class frequency, normalised so the mean weight per example is 1."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def hashed_preprocessing(plain: dict, loader: str) -> dict:
    """The data settings the fingerprint covers: the active loader's section (editing an
    unused one changes nothing), dedupe & co. only where they change the rows."""
    out = {k: v for k, v in plain.items() if k not in ("name", *UNHASHED_SETTINGS, *LOADERS)}
    for key, neutral in NEUTRAL_SETTINGS.items():
        if out.get(key, neutral) == neutral:
            out.pop(key, None)
    if out.get("dedupe") != "near":
        out.pop("near_duplicates", None)
    section = plain.get(loader)
    if isinstance(section, dict):  # switches whose effect already shows in the raw rows
        section = {k: v for k, v in section.items() if k not in UNHASHED_LOADER_KEYS}
    out[loader] = section
    return out


def split_rows(
    raw: RawData, y_all: np.ndarray, kept: np.ndarray, groups: np.ndarray | None, cfg: DataConfig
) -> dict[str, np.ndarray]:
    """Train/val/test row indices among `kept`; rows sharing a group share a split."""

    def split(rows: np.ndarray, val_fraction: float, test_fraction: float):
        own = np.arange(len(rows)) if groups is None else groups[rows]
        inner = stratified_group_split(
            y_all[rows], own, val_fraction, test_fraction, cfg.split_seed
        )
        return {k: rows[v] for k, v in inner.items()}

    if raw.fixed_split is not None and "test" in raw.fixed_split:
        is_test = np.asarray([s == "test" for s in raw.fixed_split])
        parts = split(kept[~is_test[kept]], cfg.val_fraction, 0.0)
        parts["test"] = kept[is_test[kept]]
        return parts
    return split(kept, cfg.val_fraction, cfg.test_fraction)


def label_indices(raw: RawData) -> tuple[list[str], np.ndarray]:
    """The classes (sorted names) and each example's class index; two classes at least."""
    class_names = sorted(set(raw.labels))
    if len(class_names) < 2:
        raise DataError(
            f"{raw.source}: needs at least 2 classes, found {len(class_names)} "
            f"({', '.join(repr(c) for c in class_names)})"
        )
    return class_names, np.asarray([class_names.index(lab) for lab in raw.labels], np.int32)


def stripped_of_html(raw: RawData) -> tuple[RawData, int]:
    """The texts without markup, and how many changed."""
    texts = [strip_html(t) if "<" in t or "&" in t else t for t in raw.texts]
    changed = sum(a != b for a, b in zip(texts, raw.texts, strict=True))
    return RawData(
        texts, raw.labels, raw.source, raw.key_positions, raw.fixed_split, raw.notes
    ), changed


def planted_key_masks(
    key_positions: list[list[int]], splits: dict[str, np.ndarray], max_len: int
) -> dict[str, np.ndarray]:
    """Per split, where the planted keys sit in each encoded example (the ground truth of
    the attention metrics)."""
    masks = {}
    for k, idx in splits.items():
        mask = np.zeros((len(idx), max_len), dtype=bool)
        for row, i in enumerate(idx):
            pos = [p for p in key_positions[i] if p < max_len]
            mask[row, pos] = True
        masks[k] = mask
    return masks


def prepare(cfg: DataConfig) -> PreparedData:
    """Load with the configured loader, resolve duplicates, split, fit the vocabulary on
    train, encode, audit."""
    if cfg.loader not in LOADERS:
        raise DataError(f"data.loader: unknown loader '{cfg.loader}' (known: {', '.join(LOADERS)})")
    if cfg.max_len <= 0:
        raise DataError(f"data.max_len: must be > 0, got {cfg.max_len}")
    raw = LOADERS[cfg.loader](cfg, cfg.encoding_errors)
    if not raw.texts:
        raise DataError(f"{raw.source}: no examples")
    class_names, y_all = label_indices(raw)

    raw_texts = raw.texts
    raw, html_changed = stripped_of_html(raw) if cfg.strip_html else (raw, 0)

    tokenizer = Tokenizer(cfg.token_pattern, cfg.lowercase)
    tokens = [tokenizer(t) for t in raw.texts]
    if not any(tokens):
        raise DataError(
            f"{raw.source}: every text is empty (no tokens in {len(tokens)} examples); "
            "check the text column"
        )
    fixed_test = None
    if raw.fixed_split is not None:
        fixed_test = np.asarray([s == "test" for s in raw.fixed_split])
    resolution = resolve_duplicates(tokens, y_all, cfg, fixed_test)
    splits = split_rows(raw, y_all, resolution.kept, resolution.groups, cfg)
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise DataError(f"{raw.source}: too few examples for a non-empty {name} split")
    notes = list(raw.notes)
    if line := resolution.line(str(cfg.dedupe)):
        notes.append(line)
    audit = None
    if cfg.audit.enabled:
        audit = audit_data(
            raw.texts,
            tokens,
            y_all,
            class_names,
            splits,
            resolution,
            cfg,
            html_changed,
            raw_texts,
        )

    vocab = build_vocab([tokens[i] for i in splits["train"]], cfg.vocab_size, cfg.min_count)
    x = {k: encode([tokens[i] for i in idx], vocab, cfg.max_len) for k, idx in splits.items()}
    y = {k: y_all[idx] for k, idx in splits.items()}

    key_masks = None
    if raw.key_positions is not None:
        key_masks = planted_key_masks(raw.key_positions, splits, int(cfg.max_len))
    preprocessing = hashed_preprocessing(to_plain(cfg), cfg.loader)
    return PreparedData(
        name=data_name(cfg.name, cfg.loader, raw.source),
        x=x,
        y=y,
        class_names=class_names,
        vocab=vocab,
        fingerprint=fingerprint(raw, preprocessing),
        key_masks=key_masks,
        texts={k: [raw.texts[i] for i in idx] for k, idx in splits.items()},
        indices={k: np.asarray(idx, dtype=np.int64) for k, idx in splits.items()},
        notes=notes,
        audit=audit,
    )
