"""Training throughput (samples/s) of each pooling variant relative to `classic`.

Measured side by side in one process on the same data: the variants named by
`--variants` (labels as in `labelled_settings`, e.g. attn-tanh, spattn4-none, dot;
`all` for every one); those that trim padding with length bucketing off, on (quantile
buckets) and exact (one bucket per length, no padding at all), the others as they run
(full width); with `--kernels fused keras`, each with either LSTM kernel (the first
contender, classic with the first kernel, is the baseline). Validation accuracy after
the timed epochs shows the modes learn alike; with `--seeds 0 1 2` every contender is
built and trained once per seed (weights and batch order), rates are the median over
all of them, accuracy is mean +- sd over seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time

import keras

from pipeline.config import compose_config, to_plain, typed, typed_data
from pipeline.config.schema import TrainConfig
from pipeline.data import DataError, PreparedData, prepare
from pipeline.models.build import build_model
from pipeline.models.registry import labelled_settings, variant_of
from pipeline.training.compiled import set_jit
from pipeline.training.fit import batches
from pipeline.training.sharded import shards_for

BASELINE = "classic"
DEFAULT_VARIANTS = ["attn-tanh", "attn-none", "spattn-tanh", "dot", "mean", "max", "last"]


def load(name: str, examples: int) -> PreparedData | None:
    try:
        data = prepare(typed_data(compose_config([f"data={name}"]).data))
    except DataError as err:  # a missing shared file is a skip, not a crash
        print(f"skip {name}: {err}")
        return None
    data.x["train"] = data.x["train"][:examples]
    data.y["train"] = data.y["train"][:examples]
    return data


class Contender:
    """One (variant, units, bucketing) model, built and warmed up once, timed per round."""

    def __init__(
        self,
        label: str,
        data: PreparedData,
        settings: dict,
        train: TrainConfig,
        seed: int = 0,
        jit: bool = False,
        shards: int | str = 1,
    ):
        bucketing = train.bucketing
        self.bucketing = "exact" if bucketing.exact else "on" if bucketing.enabled else "off"
        keras.utils.set_random_seed(seed)
        self.model = build_model(
            settings,
            len(data.vocab),
            data.n_classes,
            learning_rate=0.003,
            steps_per_execution=train.steps_per_execution,
        )
        # Before the first fit (op determinism is off here): Keras' XLA step, or the steps
        # over XLA blocks (train.xla.shards) the search fits with.
        blocks = shards_for(shards)
        set_jit(self.model, jit, blocks)
        self.label = label + (f" +xla{f' x{blocks}' if blocks > 1 else ''}" if jit else "")
        trim = variant_of(settings).trims_padding
        plan = batches(data, "train", train, trim_padding=trim, shuffle=True, seed=seed)
        self.ds = plan.dataset()
        self.val = batches(data, "val", train, trim_padding=trim, shuffle=False).dataset()
        self.n = len(data.y["train"])
        started = time.perf_counter()
        self.model.fit(self.ds, epochs=1, verbose=0)  # warm-up: traces (compiles) the step
        self.first_epoch_s = time.perf_counter() - started
        self.rates: list[float] = []

    def time_epoch(self) -> None:
        start = time.perf_counter()
        self.model.fit(self.ds, epochs=1, verbose=0)
        self.rates.append(self.n / (time.perf_counter() - start))

    def accuracy(self) -> float:
        """Validation accuracy after the timed epochs."""
        return float(self.model.evaluate(self.val, verbose=0, return_dict=True)["accuracy"])


def run(args) -> None:
    cfg = compose_config(list(args.set))
    model_base = to_plain(cfg.model)
    train = typed(cfg.train)
    train.early_stopping.enabled = False
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
        print(
            f"{'units':>5} {'variant':<19}{'bucketing':>10}{'samples/s':>11}{'vs classic':>11}"
            f"{'val acc':>9}{'first epoch s':>15}"
        )
        # The baseline first: every ratio is against it.
        wanted = set(args.variants or DEFAULT_VARIANTS) | {BASELINE}
        known = labelled_settings()
        unknown = wanted - {label for label, _ in known} - {"all"}
        if unknown:
            raise SystemExit(
                f"--variants: unknown {sorted(unknown)}; known: {[x for x, _ in known]}"
            )
        chosen = [(x, s) for x, s in known if "all" in wanted or x in wanted]
        variants = sorted(chosen, key=lambda item: item[0] != BASELINE)
        for units in args.units:
            keras.backend.clear_session()
            contenders: list[list[Contender]] = []  # one list (over seeds) per contender
            kernels = args.kernels or [model_base["lstm_kernel"]]
            for (label, overrides), kernel in itertools.product(variants, kernels):
                settings = {**model_base, **overrides, "units": units, "lstm_kernel": kernel}
                if len(kernels) > 1:
                    label = f"{label} {kernel}"
                # Variants that never trim padding run as they always do: full padded width.
                trims = variant_of(settings).trims_padding
                modes = [(False, False), (True, False), (True, True)] if trims else [(False, False)]
                if args.jit:  # each model as it trains best, without and with XLA
                    modes = [(True, False)] if trims else [(False, False)]
                for enabled, exact in modes:
                    b = dataclasses.replace(train.bucketing, enabled=enabled, exact=exact)
                    # With --jit: without XLA, Keras' XLA step, and XLA blocks where the
                    # cores allow (train.xla.shards; --set train.xla.shards=1 leaves them out)
                    blocks = shards_for(train.xla.shards)
                    jit_modes = [(False, 1), (True, 1)]
                    if blocks > 1:
                        jit_modes.append((True, blocks))
                    for jit, shards in jit_modes if args.jit else [(False, 1)]:
                        contenders.append(
                            [
                                Contender(
                                    label,
                                    data,
                                    settings,
                                    dataclasses.replace(train, bucketing=b),
                                    seed,
                                    jit,
                                    shards,
                                )
                                for seed in args.seeds
                            ]
                        )
            for _ in range(args.epochs):  # round robin: drift hits every variant alike
                for replicas in contenders:
                    for c in replicas:
                        c.time_epoch()
            classic = statistics.median(r for c in contenders[0] for r in c.rates)
            for replicas in contenders:
                rate = statistics.median(r for c in replicas for r in c.rates)
                accuracies = [c.accuracy() for c in replicas]
                spread = f" +-{statistics.stdev(accuracies):.4f}" if len(accuracies) > 1 else ""
                first = statistics.median(c.first_epoch_s for c in replicas)
                print(
                    f"{units:>5} {replicas[0].label:<19}{replicas[0].bucketing:>10}{rate:>11.0f}"
                    f"{rate / classic:>10.2f}x{statistics.mean(accuracies):>9.4f}{spread}"
                    f"{first:>15.1f}",
                    flush=True,
                )
