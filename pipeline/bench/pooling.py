"""Training throughput (samples/s) of each pooling variant relative to `classic`.

Measured side by side in one process on the same data: each masked variant with
length bucketing on and off; `classic` as the recipe runs it (full padded width).
"""

from __future__ import annotations

import statistics
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


class Contender:
    """One (variant, units, bucketing) model, built and warmed up once, timed per round."""

    def __init__(self, label: str, data: PreparedData, settings: dict, train: dict):
        self.label = label
        self.bucketing = train["bucketing"]["enabled"]
        keras.utils.set_random_seed(0)
        self.model = build_model(settings, len(data.vocab), data.n_classes, learning_rate=0.003)
        self.ds = batches(data, "train", train, shuffle=True, model=self.model).dataset()
        self.n = len(data.y["train"])
        self.model.fit(self.ds, epochs=1, verbose=0)  # warm-up: traces every bucket shape
        self.rates: list[float] = []

    def time_epoch(self) -> None:
        start = time.perf_counter()
        self.model.fit(self.ds, epochs=1, verbose=0)
        self.rates.append(self.n / (time.perf_counter() - start))


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
            f"{padding:.0%} padding; median of {args.epochs} round-robin epochs"
        )
        print(f"{'units':>5} {'variant':<16}{'bucketing':>10}{'samples/s':>11}{'vs classic':>11}")
        for units in args.units:
            keras.backend.clear_session()
            contenders = []
            for label, overrides in VARIANTS:
                settings = {**model_base, **overrides, "units": units}
                # classic always runs as the recipe does: full padded width
                for bucketing in [False] if label == "classic" else [False, True]:
                    t = {**train, "bucketing": {**train["bucketing"], "enabled": bucketing}}
                    contenders.append(Contender(label, data, settings, t))
            for _ in range(args.epochs):  # round robin: drift hits every variant alike
                for c in contenders:
                    c.time_epoch()
            classic = statistics.median(contenders[0].rates)
            for c in contenders:
                rate = statistics.median(c.rates)
                print(
                    f"{units:>5} {c.label:<16}{'on' if c.bucketing else 'off':>10}{rate:>11.0f}"
                    f"{rate / classic:>10.2f}x",
                    flush=True,
                )
