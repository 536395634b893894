"""Training throughput (samples/s) of each pooling variant relative to `classic`.

Measured side by side in one process on the same data: each masked variant with
length bucketing on and off; `classic` as the recipe runs it (full padded width).
"""

from __future__ import annotations

import time

import keras

from pipeline.config import compose_config, to_plain
from pipeline.data import PreparedData, prepare
from pipeline.model import build_model
from pipeline.training import batches

VARIANTS = [
    ("classic", {"pooling": "classic"}),
    ("attention-tanh", {"pooling": "attention", "attention_activation": "tanh"}),
    ("attention-none", {"pooling": "attention", "attention_activation": "none"}),
    ("mean", {"pooling": "mean"}),
    ("max", {"pooling": "max"}),
    ("last", {"pooling": "last"}),
]


def load(name: str, examples: int) -> PreparedData | None:
    try:
        data = prepare(compose_config([f"data={name}"]).data)
    except Exception as err:  # a missing shared file is a skip, not a crash
        print(f"skip {name}: {err}")
        return None
    data.x["train"] = data.x["train"][:examples]
    data.y["train"] = data.y["train"][:examples]
    return data


def throughput(data: PreparedData, settings: dict, train: dict, epochs: int) -> float:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(settings, len(data.vocab), data.n_classes, learning_rate=0.003)
    ds = batches(data, "train", train, shuffle=True).dataset()
    model.fit(ds, epochs=1, verbose=0)  # warm-up: traces every bucket shape
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return epochs * len(data.y["train"]) / (time.perf_counter() - start)


def run(args) -> None:
    cfg = compose_config([])
    model_base = to_plain(cfg.model)
    train = to_plain(cfg.train)
    train["early_stopping"]["enabled"] = False
    for name in args.datasets:
        data = load(name, args.examples)
        if data is None:
            continue
        lengths = (data.x["train"] != 0).sum(axis=1)
        padding = 1 - lengths.sum() / data.x["train"].size
        print(
            f"\n{name}: {len(data.y['train'])} training examples, max_len {data.max_len}, "
            f"{padding:.0%} padding"
        )
        header = f"{'units':>5} {'variant':<16}{'bucketing':>10}{'samples/s':>11}{'vs classic':>11}"
        print(header)
        for units in args.units:
            rows = []
            for label, overrides in VARIANTS:
                settings = {**model_base, **overrides, "units": units}
                modes = [False] if label == "classic" else [False, True]
                for bucketing in modes:
                    t = {**train, "bucketing": {**train["bucketing"], "enabled": bucketing}}
                    rows.append((label, bucketing, throughput(data, settings, t, args.epochs)))
            classic = rows[0][2]
            for label, bucketing, sps in rows:
                print(
                    f"{units:>5} {label:<16}{'on' if bucketing else 'off':>10}{sps:>11.0f}"
                    f"{sps / classic:>10.2f}x"
                )
