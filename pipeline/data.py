"""Data layer: one registry of loaders, shared tokenization, vocabulary, splits, fingerprint.

Loaders turn a config section into `RawData` (texts + labels, optional ground-truth
key positions and fixed splits); `prepare` does everything else the same way for
all of them. No TensorFlow here: tokenization is a regex so that tests, reports
and config checks stay fast.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.config import to_plain
from pipeline.errors import UserFacingError

PAD, OOV = "", "[UNK]"


class DataError(UserFacingError, ValueError):
    """Bad input data; the message names the file, column or value."""


@dataclass
class RawData:
    texts: list[str]
    labels: list[str]
    source: str
    # Ground-truth token positions that decide the label (synthetic data only).
    key_positions: list[list[int]] | None = None
    # Loader-given split per example ("train"/"test"); None: split by seed.
    fixed_split: list[str] | None = None


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

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def max_len(self) -> int:
        return int(self.x["train"].shape[1])

    def decode(self, ids: np.ndarray) -> list[str]:
        """Token strings of the real (non-padding) positions."""
        return [self.vocab[i] if i < len(self.vocab) else OOV for i in ids if i != 0]


LoaderFn = Callable[[DictConfig, str], RawData]
LOADERS: dict[str, LoaderFn] = {}


def register_loader(name: str) -> Callable[[LoaderFn], LoaderFn]:
    def deco(fn: LoaderFn) -> LoaderFn:
        LOADERS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------- loaders


@register_loader("synthetic")
def load_synthetic(cfg: DictConfig, encoding_errors: str) -> RawData:
    """Filler words with planted key tokens; the class with the most keys is the label.

    Key tokens `k<class>_<j>`: min_keys..max_keys of the label's class, plus
    `other_class_keys` keys of other classes (always fewer), so a model has to weigh
    the keys against each other rather than spot any one of them. Distractor tokens
    `d<j>` look special but carry no label; filler `w<j>` is noise. Positions are
    random. The ground truth marks the label's own keys.
    """
    s = cfg.synthetic
    rng = np.random.default_rng(s.seed)
    texts, labels, positions = [], [], []
    for _ in range(s.n_examples):
        label = int(rng.integers(s.n_classes))
        n_keys = int(rng.integers(s.min_keys, s.max_keys + 1))
        n_other = min(s.other_class_keys, n_keys - 1)
        n_dis = s.distractors_per_example
        length = max(int(rng.integers(s.min_tokens, s.max_tokens + 1)), n_keys + n_other + n_dis)
        tokens = [f"w{j}" for j in rng.integers(s.filler_vocab, size=length)]
        slots = [int(p) for p in rng.choice(length, size=n_keys + n_other + n_dis, replace=False)]
        key_slots = sorted(slots[:n_keys])
        for p in key_slots:
            tokens[p] = f"k{label}_{int(rng.integers(s.keys_per_class))}"
        others = [c for c in range(s.n_classes) if c != label]
        for p in slots[n_keys : n_keys + n_other]:
            tokens[p] = f"k{int(rng.choice(others))}_{int(rng.integers(s.keys_per_class))}"
        for p in slots[n_keys + n_other :]:
            tokens[p] = f"d{int(rng.integers(s.distractor_tokens))}"
        if s.label_noise > 0 and rng.random() < s.label_noise:
            label = int(rng.integers(s.n_classes))
        texts.append(" ".join(tokens))
        labels.append(f"class_{label}")
        positions.append(key_slots)
    return RawData(texts, labels, source="synthetic", key_positions=positions)


def _resolve_path(path: str | None, key: str) -> Path:
    if path is None or path == "???":
        raise DataError(f"{key}: no path given (set {key}=/path/to/file)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{key}: file not found: {p.resolve()}")
    return p


def _bad_utf8_message(path: Path, err: UnicodeDecodeError) -> str:
    return (
        f"{path}: not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
        "set data.encoding_errors=replace to substitute bad bytes"
    )


@register_loader("csv")
def load_csv(cfg: DictConfig, encoding_errors: str) -> RawData:
    """Any CSV with a text and a label column (quoted multi-line fields are fine)."""
    import pandas as pd

    c = cfg.csv
    path = _resolve_path(None if OmegaConf.is_missing(c, "path") else c.path, "data.csv.path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8",
            encoding_errors=encoding_errors,
        )
    except UnicodeDecodeError as err:
        raise DataError(_bad_utf8_message(path, err)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    for key, column in (("text_column", c.text_column), ("label_column", c.label_column)):
        if column not in frame.columns:
            raise DataError(
                f"data.csv.{key}: column '{column}' not in {path} "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
    if frame.empty:
        raise DataError(f"{path}: no rows")
    texts = frame[c.text_column].tolist()
    labels = [s.strip() for s in frame[c.label_column].tolist()]
    if c.labels is not None:
        keep = set(c.labels)
        rows = [i for i, lab in enumerate(labels) if lab in keep]
        texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    if c.label_map:
        mapping = dict(c.label_map)
        for lab in labels:
            if lab not in mapping:
                raise DataError(
                    f"data.csv.label_map: label '{lab}' in {path} is not in the mapping "
                    f"(keys: {', '.join(mapping)})"
                )
        labels = [mapping[lab] for lab in labels]
    return RawData(texts, labels, source=str(path))


@register_loader("text_dir")
def load_text_dir(cfg: DictConfig, encoding_errors: str) -> RawData:
    """root/<split>/<label>/*.txt; the test split (if named and present) is kept aside."""
    t = cfg.text_dir
    root = _resolve_path(None if OmegaConf.is_missing(t, "root") else t.root, "data.text_dir.root")
    texts, labels, splits = [], [], []
    names = [(t.train_split, "train")] + ([(t.test_split, "test")] if t.test_split else [])
    for folder, split in names:
        split_dir = root / folder
        if not split_dir.is_dir():
            if split == "train":
                raise DataError(f"data.text_dir.train_split: folder not found: {split_dir}")
            continue
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in sorted(label_dir.glob(f"*{t.extension}")):
                try:
                    texts.append(f.read_bytes().decode("utf-8", errors=encoding_errors))
                except UnicodeDecodeError as err:
                    raise DataError(_bad_utf8_message(f, err)) from None
                labels.append(label_dir.name)
                splits.append(split)
    if not texts:
        raise DataError(f"{root}: no *{t.extension} files under <split>/<label>/")
    return RawData(texts, labels, source=str(root), fixed_split=splits)


# ---------------------------------------------------------------- preprocessing


class Tokenizer:
    """Regex tokenizer shared by all loaders (and by plots, to decode texts)."""

    def __init__(self, pattern: str, lowercase: bool) -> None:
        self.regex = re.compile(pattern)
        self.lowercase = lowercase

    def __call__(self, text: str) -> list[str]:
        return self.regex.findall(text.lower() if self.lowercase else text)


def build_vocab(token_lists: list[list[str]], vocab_size: int, min_count: int) -> list[str]:
    """Index 0 padding, 1 OOV, then the most frequent training tokens (ties by name)."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, OOV] + words[: vocab_size - 2]


def encode(token_lists: list[list[str]], vocab: list[str], max_len: int) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(token_lists), max_len), dtype=np.int32)
    for row, toks in enumerate(token_lists):
        ids = [index.get(t, 1) for t in toks[:max_len]]
        out[row, : len(ids)] = ids
    return out


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Deterministic per-class split of indices into train/val/test."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        # Small classes still get one example in each requested split while train keeps one.
        n_val = int(round(val_fraction * len(idx))) or int(val_fraction > 0 and len(idx) >= 2)
        n_test = int(round(test_fraction * len(idx))) or int(
            test_fraction > 0 and len(idx) - n_val >= 2
        )
        parts["val"].extend(idx[:n_val])
        parts["test"].extend(idx[n_val : n_val + n_test])
        parts["train"].extend(idx[n_val + n_test :])
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


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


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse class frequency, normalised so the mean weight per example is 1."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def prepare(cfg: DictConfig) -> PreparedData:
    """Load with the configured loader, split, fit the vocabulary on train, encode."""
    if cfg.loader not in LOADERS:
        raise DataError(f"data.loader: unknown loader '{cfg.loader}' (known: {', '.join(LOADERS)})")
    if cfg.max_len <= 0:
        raise DataError(f"data.max_len: must be > 0, got {cfg.max_len}")
    raw = LOADERS[cfg.loader](cfg, cfg.encoding_errors)
    if not raw.texts:
        raise DataError(f"{raw.source}: no examples")
    class_names = sorted(set(raw.labels))
    if len(class_names) < 2:
        raise DataError(
            f"{raw.source}: needs at least 2 classes, found {len(class_names)} "
            f"({', '.join(repr(c) for c in class_names)})"
        )
    y_all = np.asarray([class_names.index(lab) for lab in raw.labels], dtype=np.int32)

    if raw.fixed_split is not None and "test" in raw.fixed_split:
        is_test = np.asarray([s == "test" for s in raw.fixed_split])
        pool = np.flatnonzero(~is_test)
        inner = stratified_split(y_all[pool], cfg.val_fraction, 0.0, cfg.split_seed)
        splits = {
            "train": pool[inner["train"]],
            "val": pool[inner["val"]],
            "test": np.flatnonzero(is_test),
        }
    else:
        splits = stratified_split(y_all, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise DataError(f"{raw.source}: too few examples for a non-empty {name} split")

    tokenizer = Tokenizer(cfg.token_pattern, cfg.lowercase)
    tokens = [tokenizer(t) for t in raw.texts]
    vocab = build_vocab([tokens[i] for i in splits["train"]], cfg.vocab_size, cfg.min_count)
    x = {k: encode([tokens[i] for i in idx], vocab, cfg.max_len) for k, idx in splits.items()}
    y = {k: y_all[idx] for k, idx in splits.items()}

    key_masks = None
    if raw.key_positions is not None:
        key_masks = {}
        for k, idx in splits.items():
            mask = np.zeros((len(idx), cfg.max_len), dtype=bool)
            for row, i in enumerate(idx):
                pos = [p for p in raw.key_positions[i] if p < cfg.max_len]
                mask[row, pos] = True
            key_masks[k] = mask

    # Only the active loader's section counts: editing an unused one changes nothing.
    plain = to_plain(cfg)
    preprocessing = {k: v for k, v in plain.items() if k not in ("name", *LOADERS)}
    preprocessing[cfg.loader] = plain.get(cfg.loader)
    return PreparedData(
        name=cfg.name,
        x=x,
        y=y,
        class_names=class_names,
        vocab=vocab,
        fingerprint=fingerprint(raw, preprocessing),
        key_masks=key_masks,
        texts={k: [raw.texts[i] for i in idx] for k, idx in splits.items()},
    )
