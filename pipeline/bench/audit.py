"""Cost and effect of the data audit on a scraped-looking set of near-copies.

Builds a CSV of `--texts` distinct airline tweets, each written `--copies` times with
one word changed (95,400 rows by default; two copies then differ in two tokens, Jaccard
(n-2)/(n+2) for n tokens, so `--min-tokens 18` keeps the pairs at or above the default
threshold of 0.8; shorter texts need a lower `--threshold`), then measures side by side
in this process:
data preparation without the audit, with it (dedupe=none: it reports the leak) and with
dedupe=near (every copy family in one split); the audit's extra peak RSS; and one
trial's fit on each split, whose validation accuracy shows what the leak did.
Goals: the audit <= 10% of data preparation + one trial's fit, <= 1 GB extra RSS;
dedupe=near keeps each family in one split and brings the validation accuracy from
about 1.0 down to the honest figure.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from pipeline.bench.embeddings import peak_mb
from pipeline.config import compose_config, typed_data
from pipeline.data import prepare
from pipeline.data.prepare import Tokenizer
from pipeline.progress import say

SHARE_GOAL = 0.10
RSS_GOAL_MB = 1024.0


def write_near_copies(
    source, out: Path, texts: int, copies: int, min_tokens: int = 4, seed: int = 0
) -> int:
    """`texts` distinct tweets (after tokenizing) of at least `min_tokens` distinct tokens
    x `copies`, one word replaced in each (Jaccard is over token sets: "? ? ? ?" is one)."""
    import pandas as pd

    frame = pd.read_csv(source)
    tokenize = Tokenizer(r"[\w@#']+|[^\w\s]", True)
    frame["tokens"] = frame["text"].map(lambda t: tokenize(str(t)))
    frame = frame[frame["tokens"].map(lambda t: len(set(t))) >= min_tokens]  # distinct ones
    frame = frame.loc[~frame["tokens"].map(" ".join).duplicated()]
    rng = np.random.default_rng(seed)
    chosen = frame.iloc[rng.permutation(len(frame))[:texts]]
    words = sorted({w for toks in frame["tokens"] for w in toks if w.isalpha()})
    rows = 0
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "airline_sentiment"])
        for toks, label in zip(chosen["tokens"], chosen["airline_sentiment"], strict=True):
            for _ in range(copies):
                copy = list(toks)
                copy[rng.integers(len(copy))] = words[rng.integers(len(words))]
                writer.writerow([" ".join(copy), label])
                rows += 1
    return rows


def timed_prepare(overrides: list[str]):
    cfg = compose_config(overrides)
    before = peak_mb()
    started = time.perf_counter()
    data = prepare(typed_data(cfg.data))
    return cfg, data, time.perf_counter() - started, peak_mb() - before


def one_trial(cfg, data, epochs: int) -> tuple[float, float]:
    """(seconds, validation accuracy) of one fit with the config's model."""
    from pipeline.models.registry import variant_of
    from pipeline.search.space import build_trial_model, trial_settings
    from pipeline.training.evaluation import evaluate
    from pipeline.training.fit import fit

    settings, train = trial_settings(cfg, {})
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model = build_trial_model(settings, train, len(data.vocab), data.n_classes)
    trims = variant_of(settings).trims_padding
    fit(model, data, dataclasses.replace(train, epochs=epochs), trim_padding=trims)
    seconds = time.perf_counter() - started
    metrics, _ = evaluate(model, data, "val", train, trim_padding=trims, prefix="val_")
    return seconds, metrics["val_accuracy"]


def run(args) -> None:
    base_cfg = compose_config(["data=airline_tweets"])
    source = base_cfg.data.csv.path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "near_copies.csv"
        rows = write_near_copies(source, path, args.texts, args.copies, args.min_tokens)
        say(
            f"wrote {rows} rows: {args.texts} tweets of >= {args.min_tokens} tokens x "
            f"{args.copies} copies, one word changed in each"
        )
        common = [
            "data=airline_tweets",
            f"data.csv.path={path}",
            "data.class_weight=none",
            f"model.units={args.units}",
            "train.early_stopping.enabled=false",
            *(
                [f"data.near_duplicates.threshold={args.threshold}"]
                if args.threshold is not None
                else []
            ),
        ]
        _, _, plain_s, _ = timed_prepare([*common, "data.dedupe=none", "data.audit.enabled=false"])
        cfg_none, leaky, audited_s, rss_none = timed_prepare([*common, "data.dedupe=none"])
        cfg_near, honest, near_s, rss_near = timed_prepare([*common, "data.dedupe=near"])
        say(leaky.audit.line())
        say(honest.audit.line())
        fit_none, acc_none = one_trial(cfg_none, leaky, args.epochs)
        fit_near, acc_near = one_trial(cfg_near, honest, args.epochs)
    families_split = _families_across_splits(honest, args.copies)
    audit_s = audited_s - plain_s
    near_extra = near_s - plain_s
    budget = plain_s + fit_none
    print(
        "\n".join(
            [
                "",
                f"data preparation without the audit: {plain_s:.1f} s; one trial's fit "
                f"({args.epochs} epochs, units {args.units}): {fit_none:.1f} s",
                f"audit (dedupe=none, near-duplicates across splits): +{audit_s:.1f} s = "
                f"{audit_s / budget:.1%} of preparation + fit (goal <= {SHARE_GOAL:.0%})",
                f"dedupe=near (families found before the split, audit after): +{near_extra:.1f} "
                f"s = {near_extra / budget:.1%}",
                f"extra peak RSS: audit {max(rss_none, 0):.0f} MB, dedupe=near "
                f"{max(rss_near, 0):.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB)",
                f"validation copies of training, dedupe=none: {leaky.audit.leaks['val near']:.1%}"
                f" near; dedupe=near: {honest.audit.leaks['val near']:.1%}; copy families "
                f"split across splits with dedupe=near: {families_split}",
                f"validation accuracy after one trial: dedupe=none {acc_none:.4f}, dedupe=near "
                f"{acc_near:.4f} (the honest figure)",
            ]
        )
    )


def _families_across_splits(data, copies: int) -> int:
    """Source families (rows written consecutively, `copies` each) found in 2+ splits."""
    split_of = {}
    for name, idx in data.indices.items():
        for i in idx.tolist():
            split_of[i] = name
    families: dict[int, set[str]] = {}
    for row, name in split_of.items():
        families.setdefault(row // copies, set()).add(name)
    return sum(len(s) > 1 for s in families.values())
