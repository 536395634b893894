"""Cost of pretrained vectors: aligning a large vector file once, and a trial's start.

Writes a GloVe-format file of `--words` random vectors (the data's own vocabulary among
them, so coverage is realistic), then measures in this process: the first alignment
(gensim reads the file; sha256 for the cache key), its extra peak RSS, the cached
alignment a resumed search or a worker gets, and a trial's start (model build with the
table + one training step) against the same start with random embeddings, alternated.
Goals: alignment <= 30 s and <= 1 GB extra RSS; a trial starts <= 1 s slower.
`--source glove` measures a named set instead (goals: <= 2 s, <= 200 MB extra RSS).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from pipeline.config import compose_config, to_plain, typed_data
from pipeline.data import prepare, vectors
from pipeline.progress import say
from pipeline.search.space import build_trial_model, trial_settings, trial_vectors
from pipeline.training.fit import fit

ALIGN_GOAL_S = 30.0
RSS_GOAL_MB = 1024.0
START_GOAL_S = 1.0
NAMED_ALIGN_GOAL_S = 2.0  # a named set (GloVe 6B 50d) to a 20,000-word vocabulary
NAMED_RSS_GOAL_MB = 200.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_vectors(path: Path, vocab: list[str], words: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = [w for w in vocab[2:] if w.strip() and " " not in w]
    names += [f"filler{i}" for i in range(max(0, words - len(names)))]
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, len(names), 10_000):
            block = rng.normal(size=(min(10_000, len(names) - start), dim)).astype(np.float32)
            rows = [
                names[start + i] + " " + " ".join(f"{v:.5f}" for v in vec)
                for i, vec in enumerate(block)
            ]
            f.write("\n".join(rows) + "\n")


def trial_start(cfg, data, settings, train, table) -> float:
    """Seconds from a trial's first line to its first trained batch."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    found = trial_vectors(cfg, data, settings) if table is not None else None
    model = build_trial_model(settings, train, len(data.vocab), data.n_classes, found)
    small = replace(
        data,
        x={**data.x, "train": data.x["train"][:64]},
        y={**data.y, "train": data.y["train"][:64]},
    )
    fit(model, small, dataclasses.replace(train, epochs=1), trim_padding=True)
    return time.perf_counter() - started


def start_medians(cfg, with_vectors, data, settings, train, table, repeats: int):
    """(median trial start from random vectors, median start from `table`), alternated."""
    plain_settings, _ = trial_settings(cfg, {"embedding_dim": settings["embedding_dim"]})
    starts: dict[str, list[float]] = {"random": [], "vectors": []}
    for _ in range(repeats):
        starts["random"].append(trial_start(cfg, data, plain_settings, train, None))
        starts["vectors"].append(trial_start(with_vectors, data, settings, train, table))
    return statistics.median(starts["random"]), statistics.median(starts["vectors"])


def cold_then_again(with_vectors, data, settings, forget) -> tuple:
    """(table, seconds, extra peak MB) of a trial's first alignment, then the seconds of
    another in a fresh process's state (the process cache cleared, `forget` called): a
    resumed search or a cluster worker."""
    before, started = rss_mb(), time.perf_counter()
    table = trial_vectors(with_vectors, data, settings)
    cold = time.perf_counter() - started
    extra = peak_mb() - before
    say(table.line())
    vectors._TABLES.clear()
    forget()
    started = time.perf_counter()
    trial_vectors(with_vectors, data, settings)
    return table, cold, extra, time.perf_counter() - started


def named_vocabulary(data, entry, size: int):
    """`data` with a `size`-word vocabulary: three in four words of the named set, taken
    across its frequency ranks, and the rest words it lacks (OOV rows)."""
    from pipeline.data.named_vectors import _words, locate

    words = _words(locate(entry)[1], entry.words_column)
    known = size * 3 // 4
    step = max(1, len(words) // known)
    vocab = ["<pad>", "<oov>", *words[::step][: known - 2]]
    vocab += [f"zz-unknown-{i}" for i in range(size - len(vocab))]
    return replace(data, vocab=vocab)


def run_named(args) -> None:
    """A named set (`--source glove`) aligned to a `--vocab`-word vocabulary: the first
    alignment in a new process (its checksum check, the word list, the rows), then with
    the check's stamp (a resumed search, a worker), then a trial's start against random."""
    from pipeline.config.vector_sets import named

    entry = named(args.source)
    if entry is None:
        raise SystemExit(f"error: --source: no named vector set '{args.source}'")
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data={args.data}", f"tuner.directory={tmp}/tuner", "model.pooling=attention"]
        cfg = compose_config(base)
        with_named = compose_config([*base, f"model.embeddings.source={args.source}"])
        data = named_vocabulary(prepare(typed_data(cfg.data)), entry, args.vocab)
        settings, train = trial_settings(with_named, {})

        def new_vocabulary() -> None:  # aligned again, the check's stamp kept
            for aligned in Path(tmp, "tuner", "vectors").glob("*.npz"):
                aligned.unlink()

        table, cold, extra, stamped = cold_then_again(with_named, data, settings, new_vocabulary)
        rand, vec = start_medians(cfg, with_named, data, settings, train, table, args.repeats)
        print(
            "\n".join(
                [
                    "",
                    f"{args.source} aligned to a {len(data.vocab)}-word vocabulary, first "
                    f"time (sha256 check, word list, rows): {cold:.2f} s (goal <= "
                    f"{NAMED_ALIGN_GOAL_S:.0f} s)",
                    f"extra peak RSS: {extra:.0f} MB (goal <= {NAMED_RSS_GOAL_MB:.0f})",
                    f"again with the check's stamp (another vocabulary, a new process): "
                    f"{stamped:.2f} s",
                    f"trial start, median of {args.repeats}: random {rand:.2f} s, "
                    f"{args.source} {vec:.2f} s, {vec - rand:+.2f} s",
                ]
            )
        )


def run(args) -> None:
    if args.source != "file":
        run_named(args)
        return
    data_name = args.data
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(
            [f"data={data_name}", f"tuner.directory={tmp}/tuner", "model.pooling=attention"]
        )
        data = prepare(typed_data(cfg.data))
        path = Path(tmp) / "vectors.txt"
        started = time.perf_counter()
        write_vectors(path, data.vocab, args.words, args.dim)
        size = path.stat().st_size / 1e6
        say(
            f"wrote {args.words} x {args.dim} GloVe-format vectors ({size:.0f} MB) in "
            f"{time.perf_counter() - started:.0f} s; data {data.name}, vocab {len(data.vocab)}"
        )
        import gensim.models  # noqa: F401  (its import is not the alignment's cost)

        with_file = compose_config(
            [
                f"data={data_name}",
                f"tuner.directory={tmp}/tuner",
                "model.pooling=attention",
                "model.embeddings.source=file",
                f"model.embeddings.path={path}",
            ]
        )
        settings, train = trial_settings(with_file, {})
        table, cold, extra, cached = cold_then_again(
            with_file,
            data,
            settings,
            vectors._FILE_HASHES.clear,  # hashed again for the key
        )
        rand, vec = start_medians(cfg, with_file, data, settings, train, table, args.repeats)
        print(
            "\n".join(
                [
                    "",
                    f"first alignment (read {size:.0f} MB, sha256, align): {cold:.1f} s "
                    f"(goal <= {ALIGN_GOAL_S:.0f} s)",
                    f"extra peak RSS of the alignment: {extra:.0f} MB (goal <= {RSS_GOAL_MB:.0f})",
                    f"cached alignment (a resume, a worker: sha256 of the file + the cached "
                    f"table): {cached:.2f} s",
                    f"trial start, median of {args.repeats}: random {rand:.2f} s, vectors "
                    f"{vec:.2f} s, {vec - rand:+.2f} s (goal <= +{START_GOAL_S:.0f} s)",
                    f"config: {to_plain(with_file.model.embeddings)}",
                ]
            )
        )
