"""Data loaders: one registry, and the built-in synthetic, CSV and text-folder loaders.

A loader turns its config section into `RawData` (texts + labels, optional ground-truth
key positions and fixed splits); `pipeline.data.prepare` does everything else the same
way for all of them. A plugin module registers its own with `@register_loader("name")`,
optionally with a dataclass for its own `data.<name>` section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.config.plain import to_plain
from pipeline.config.schema import DataConfig, SyntheticRule, TableConfig
from pipeline.errors import UserFacingError


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
    # What the loader changed on the way, for the data line ("dropped 16 rows with no label").
    notes: list[str] = field(default_factory=list)


LoaderFn = Callable[[DataConfig, str], RawData]  # the data section, typed
LOADERS: dict[str, LoaderFn] = {}


def register_loader(name: str, config: type | None = None) -> Callable[[LoaderFn], LoaderFn]:
    """`@register_loader("parquet", config=ParquetConfig)`: `data.loader=parquet` calls the
    function; `config` (a dataclass with defaults) is its own typed section `data.parquet`
    in every config whose `plugins` list the registering module."""

    def deco(fn: LoaderFn) -> LoaderFn:
        if config is not None:
            from pipeline.config.sections import register_section

            register_section("data", name, config, module=fn.__module__)
        LOADERS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------- loaders


@register_loader("synthetic")
def load_synthetic(cfg: DataConfig, encoding_errors: str) -> RawData:
    """Filler words `w<j>` with planted key tokens `k<class>_<j>` that decide the label.

    rule=negation: min_keys..max_keys keys of the label's class and as many of one other
    class, each of those one or two words after a "not" that cancels it. Both classes occur
    equally often, so a bag of words (even of word pairs) can only guess between them; a
    sequence model has to read what comes before each key.
    rule=majority: the label's class has the most keys (other_class_keys of other classes,
    always fewer): any model that counts solves it.
    Distractor tokens `d<j>` look special but carry no label. Positions are random. The
    ground truth marks the label's own keys.
    """
    s = SimpleNamespace(**to_plain(cfg.synthetic))  # the rule as its string
    example = _negation_example if s.rule == SyntheticRule.negation else _majority_example
    rng = np.random.default_rng(s.seed)
    texts, labels, positions = [], [], []
    for _ in range(s.n_examples):
        label = int(rng.integers(s.n_classes))
        n_keys = int(rng.integers(s.min_keys, s.max_keys + 1))
        tokens, deciding = example(s, rng, label, n_keys)
        if s.label_noise > 0 and rng.random() < s.label_noise:
            label = int(rng.integers(s.n_classes))
        texts.append(" ".join(tokens))
        labels.append(f"class_{label}")
        positions.append(deciding)
    return RawData(texts, labels, source="synthetic", key_positions=positions)


def _key(s: SimpleNamespace, rng: np.random.Generator, cls: int) -> str:
    return f"k{cls}_{int(rng.integers(s.keys_per_class))}"


def _filler(s: SimpleNamespace, rng: np.random.Generator, n: int) -> list[str]:
    return [f"w{j}" for j in rng.integers(s.filler_vocab, size=n)]


def _distractor(s: SimpleNamespace, rng: np.random.Generator) -> str:
    return f"d{int(rng.integers(s.distractor_tokens))}"


def _gap(s: SimpleNamespace, rng: np.random.Generator) -> list[str]:
    """One or two filler words: every key follows a filler word, so no word pair tells a
    cancelled key from the label's."""
    return _filler(s, rng, int(rng.integers(1, 3)))


def _negation_example(s, rng, label: int, n_keys: int) -> tuple[list[str], list[int]]:
    """The label's keys, as many keys of one other class each after "not", every key one
    or two filler words after what precedes it, and distractors, placed in filler words
    up to a random length."""
    other = int(rng.choice([c for c in range(s.n_classes) if c != label]))
    phrases = [[*_gap(s, rng), _key(s, rng, label)] for _ in range(n_keys)]
    phrases += [[NEGATOR, *_gap(s, rng), _key(s, rng, other)] for _ in range(n_keys)]
    phrases += [[_distractor(s, rng)] for _ in range(s.distractors_per_example)]
    planted = sum(len(p) for p in phrases)
    filler = _filler(s, rng, max(int(rng.integers(s.min_tokens, s.max_tokens + 1)) - planted, 0))
    cuts = np.sort(rng.integers(0, len(filler) + 1, size=len(phrases)))
    tokens, deciding, start = [], [], 0
    for cut, i in zip(cuts, rng.permutation(len(phrases)), strict=True):
        tokens += filler[start:cut]
        start = cut
        if i < n_keys:  # one of the label's own keys, the phrase's last word
            deciding.append(len(tokens) + len(phrases[i]) - 1)
        tokens += phrases[i]
    return tokens + filler[start:], deciding


def _majority_example(s, rng, label: int, n_keys: int) -> tuple[list[str], list[int]]:
    """min_keys..max_keys keys of the label's class, fewer of others (the task before
    `rule` existed: the same draws, so its data and fingerprints are unchanged)."""
    n_other = min(s.other_class_keys, n_keys - 1)
    n_dis = s.distractors_per_example
    length = max(int(rng.integers(s.min_tokens, s.max_tokens + 1)), n_keys + n_other + n_dis)
    tokens = _filler(s, rng, length)
    slots = [int(p) for p in rng.choice(length, size=n_keys + n_other + n_dis, replace=False)]
    key_slots = sorted(slots[:n_keys])
    for p in key_slots:
        tokens[p] = _key(s, rng, label)
    others = [c for c in range(s.n_classes) if c != label]
    for p in slots[n_keys : n_keys + n_other]:
        tokens[p] = _key(s, rng, int(rng.choice(others)))
    for p in slots[n_keys + n_other :]:
        tokens[p] = _distractor(s, rng)
    return tokens, key_slots


NEGATOR = "not"


def _resolve_path(path: str | None, key: str, folder: bool = False) -> Path:
    """The given path, checked: it exists and is a file (or a folder, when wanted)."""
    if path is None or path == "???":
        raise DataError(f"{key}: no path given (set {key}=/path/to/file)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{key}: {'folder' if folder else 'file'} not found: {p.resolve()}")
    if folder and not p.is_dir():
        raise DataError(f"{key}: not a folder: {p.resolve()}")
    if not folder and p.is_dir():
        raise DataError(f"{key}: is a folder, not a file: {p.resolve()}")
    return p


def _bad_utf8_message(path: Path, err: UnicodeDecodeError) -> str:
    return (
        f"{path}: not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
        "set data.encoding_errors=replace to substitute bad bytes"
    )


SEPARATORS = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def separator(sep: str, path: Path) -> str:
    """`data.csv.sep`: `auto` is a tab for `.tsv`/`.tab` files (also gzipped), else a comma;
    a name (`tab`, `comma`, ...) or the character itself."""
    if sep == "auto":
        suffixes = [x.lower() for x in path.suffixes if x.lower() != ".gz"]
        return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab") else ","
    sep = SEPARATORS.get(sep, {"\\t": "\t"}.get(sep, sep))
    if len(sep) != 1:
        raise DataError(
            f"data.csv.sep: {sep!r} is not one character (or auto, {', '.join(SEPARATORS)})"
        )
    return sep


@register_loader("csv")
def load_csv(cfg: DataConfig, encoding_errors: str) -> RawData:
    """Any CSV or TSV with a text and a label column (quoted multi-line fields are fine),
    with a header line or columns by position."""
    import pandas as pd

    c = cfg.csv
    path = _resolve_path(c.path, "data.csv.path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    sep = separator(str(c.sep), path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if c.header else None,
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
    frame.columns = [str(col) for col in frame.columns]
    if frame.shape[1] == 1:  # a text and a label need two columns
        shown = "tab" if sep == "\t" else repr(sep)
        raise DataError(
            f"data.csv.sep: {shown} splits no line of {path} into columns; set data.csv.sep "
            f"(tab, comma, semicolon, pipe or the character)"
        )
    return table_data(frame, c, path, "csv")


@register_loader("jsonl")
def load_jsonl(cfg: DataConfig, encoding_errors: str) -> RawData:
    """JSON Lines: one object a line; the text and label are two of its keys."""
    import json

    import pandas as pd

    c = cfg.jsonl
    path = _resolve_path(c.path, "data.jsonl.path")
    rows = []
    with path.open(encoding="utf-8", errors=encoding_errors) as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: not a JSON object ({type(row).__name__})")
                rows.append(row)
        except UnicodeDecodeError as err:
            raise DataError(_bad_utf8_message(path, err)) from None
    frame = pd.DataFrame(rows)
    return table_data(frame, c, path, "jsonl")


@register_loader("parquet")
def load_parquet(cfg: DataConfig, encoding_errors: str) -> RawData:
    """A Parquet file with a text and a label column."""
    import pandas as pd

    c = cfg.parquet
    path = _resolve_path(c.path, "data.parquet.path")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})"
        ) from None
    return table_data(frame, c, path, "parquet")


def _cell(value) -> str:
    """A table cell as text: absent, None and NaN are empty; 3.0 from a float column is 3."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table_data(frame, c: TableConfig, path: Path, section: str) -> RawData:
    """Texts and labels from a table's two columns: labels stripped, empty ones dropped (or
    refused), kept (`labels`), named (`label_names`), renamed (`label_map`)."""
    for key, column in (("text_column", c.text_column), ("label_column", c.label_column)):
        if str(column) not in frame.columns:
            raise DataError(
                f"data.{section}.{key}: column '{column}' not in {path} "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
    if frame.empty:
        raise DataError(f"{path}: no rows")
    texts = [_cell(v) for v in frame[str(c.text_column)].tolist()]
    labels = [_cell(v).strip() for v in frame[str(c.label_column)].tolist()]
    notes = []
    missing = [i for i, lab in enumerate(labels) if not lab]
    if missing:
        if not c.drop_missing_labels:
            raise DataError(
                f"{path}: {len(missing)} row(s) with an empty '{c.label_column}' (first: data "
                f"row {missing[0] + 1}); drop them with data.{section}.drop_missing_labels=true"
            )
        gone = set(missing)
        texts = [t for i, t in enumerate(texts) if i not in gone]
        labels = [lab for i, lab in enumerate(labels) if i not in gone]
        notes.append(f"dropped {len(missing)} rows with no label")
    if c.label_names is not None:
        labels = named_labels(labels, c.label_names, path, section)
    if c.labels is not None:
        keep = set(c.labels)
        rows = [i for i, lab in enumerate(labels) if lab in keep]
        texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    if c.label_map:
        mapping = dict(c.label_map)
        for lab in labels:
            if lab not in mapping:
                raise DataError(
                    f"data.{section}.label_map: label '{lab}' in {path} is not in the mapping "
                    f"(keys: {', '.join(mapping)})"
                )
        labels = [mapping[lab] for lab in labels]
    return RawData(texts, labels, source=str(path), notes=notes)


def named_labels(labels: list[str], names, path: Path, section: str) -> list[str]:
    """Numeric labels 0..n-1 as names: `names` is a list or a file of one name a line."""
    key = f"data.{section}.label_names"
    if isinstance(names, str):
        listed = _resolve_path(names, key)
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise DataError(f"{key}: a name is listed twice ({', '.join(names)})")
    out = []
    for lab in labels:
        try:
            index = int(lab)
        except ValueError:
            raise DataError(
                f"{key}: label '{lab}' in {path} is not a number 0..{len(names) - 1}"
            ) from None
        if not 0 <= index < len(names):
            raise DataError(
                f"{key}: label {index} in {path} has no name ({len(names)} names: 0..."
                f"{len(names) - 1})"
            )
        out.append(names[index])
    return out


@register_loader("text_dir")
def load_text_dir(cfg: DataConfig, encoding_errors: str) -> RawData:
    """root/<split>/<label>/*.txt; the test split (if named and present) is kept aside."""
    t = cfg.text_dir
    root = _resolve_path(t.root, "data.text_dir.root", folder=True)
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
