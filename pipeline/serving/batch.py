"""Batch scoring with a logged text model: a CSV column or a folder of .txt files in, one
row per text out (the model's columns, after the input's own id or file name)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.data.loaders import DataError

CHUNK = 4096  # texts per predict call: progress every chunk, memory bounded


def read_texts(source: Path, text_column: str) -> tuple[pd.DataFrame, list[str]]:
    """(the rows to carry into the output, their texts) from a CSV or a .txt folder."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{source}: no .txt files in this folder")
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
        return pd.DataFrame({"file": [str(p.relative_to(source)) for p in files]}), texts
    if not source.exists():
        raise DataError(f"--input: file not found: {source}")
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{source}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if text_column not in frame.columns:
        raise DataError(
            f"{source}: no column '{text_column}' (columns: {', '.join(frame.columns)}); "
            "set --text-column"
        )
    if frame.empty:
        raise DataError(f"{source}: no rows")
    return frame.drop(columns=[text_column]), frame[text_column].tolist()


def beside(rows: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """The input's own columns, then the model's; a model column whose name the input
    already uses (a CSV with its own `label`) is prefixed `pred_` until it is unique."""
    taken = set(map(str, rows.columns))
    renamed = {}
    for column in scored.columns:
        name = str(column)
        while name in taken:
            name = f"pred_{name}"
        taken.add(name)
        renamed[column] = name
    return rows.reset_index(drop=True).join(scored.rename(columns=renamed))


def score(model, texts: list[str], explain: bool = False, progress: bool = True) -> pd.DataFrame:
    """The model's rows for `texts`, in chunks, with progress on stderr for long inputs."""
    parts = []
    started = time.perf_counter()
    params = {"explain": True} if explain else None
    size = min(CHUNK, model.unwrap_python_model().rows_per_call(explain) or CHUNK)
    for start in range(0, len(texts), size):
        chunk = pd.DataFrame({"text": texts[start : start + size]})
        parts.append(model.predict(chunk, params=params))
        done = min(start + size, len(texts))
        if progress and len(texts) > CHUNK:
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"scored {done}/{len(texts)} texts ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return pd.concat(parts, ignore_index=True)
