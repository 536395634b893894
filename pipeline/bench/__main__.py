"""`python -m pipeline.bench {pooling,overhead,memory,...,pause,kept}`:
benchmarks that print ratios measured side by side in one run (never timed assertions in
tests)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from pipeline.config.schema import LstmKernel, PrunerKind, XlaLstm

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    p = sub.add_parser("pooling", help="training throughput of each pooling variant vs classic")
    p.add_argument("--units", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--datasets", nargs="+", default=["airline_tweets", "synthetic"])
    p.add_argument("--examples", type=int, default=2000, help="training examples per run")
    p.add_argument("--epochs", type=int, default=3, help="timed round-robin epochs (median)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="variant labels (classic always runs; 'all' for every registered one)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="weight and batch-order seeds")
    p.add_argument(
        "--jit",
        action="store_true",
        help="each variant without and with XLA (quantile buckets for those that trim)",
    )
    p.add_argument(
        "--kernels",
        nargs="+",
        default=None,
        choices=[k.value for k in LstmKernel],
        help="each variant with each LSTM kernel (model.lstm_kernel; default: the config's)",
    )
    p.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    o = sub.add_parser("overhead", help="bare model.fit vs one tracked trial")
    o.add_argument("--repeats", type=int, default=3)
    o.add_argument("--epochs", type=int, default=3)
    o.add_argument("--data", default="synthetic", help="data preset (e.g. airline_tweets)")
    o.add_argument(
        "--attention",
        action="store_true",
        help="only the attention diagnostics' cost (heatmaps, faithfulness) against the fit",
    )
    o.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    m = sub.add_parser("memory", help="RSS after each of N small trials in one process")
    m.add_argument("--trials", type=int, default=20)
    s = sub.add_parser("startup", help="wall time of --help and --cfg job")
    s.add_argument("--repeats", type=int, default=5)
    c = sub.add_parser("scaling", help="trials/hour with 1 vs 2 cluster workers")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--trials", type=int, default=10)
    c.add_argument(
        "--stores",
        nargs="+",
        default=["sqlite"],
        choices=["sqlite", "sqlite-server", "postgres-server"],
        help="tracking stores to compare (postgres-server: a throwaway PostgreSQL cluster)",
    )
    c.add_argument("--no-local", dest="local", action="store_false", help="skip the local run")
    r = sub.add_parser("pruning", help="the same random search with and without pruning")
    r.add_argument("--data", default="airline_tweets", help="data preset")
    r.add_argument("--trials", type=int, default=20)
    r.add_argument("--epochs", type=int, default=6)
    r.add_argument("--tuner-seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument(
        "--pruner", default="median", choices=[k.value for k in PrunerKind if k.over_epochs]
    )
    r.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    e = sub.add_parser("embeddings", help="aligning a large vector file; a trial's start")
    e.add_argument("--data", default="airline_tweets", help="data preset (its vocabulary)")
    e.add_argument("--words", type=int, default=400_000)
    e.add_argument("--dim", type=int, default=100)
    e.add_argument("--repeats", type=int, default=5)
    e.add_argument(
        "--source",
        default="file",
        help="file (a written GloVe-format file) or a named set (glove): aligned to a "
        "--vocab-word vocabulary",
    )
    e.add_argument("--vocab", type=int, default=20_000, help="named set: vocabulary size")
    a = sub.add_parser("audit", help="the data audit on 30 near-copies of each tweet")
    a.add_argument("--texts", type=int, default=3180)
    a.add_argument("--copies", type=int, default=30)
    a.add_argument("--epochs", type=int, default=3, help="the trial's epochs (train.epochs)")
    a.add_argument("--units", type=int, default=32)
    a.add_argument("--min-tokens", type=int, default=18, help="tweets at least this long")
    a.add_argument("--threshold", type=float, default=None, help="near-duplicate Jaccard")
    v = sub.add_parser("serve", help="the text-in model: equality, batch rate, served latency")
    v.add_argument("--data", default="airline_tweets")
    v.add_argument("--epochs", type=int, default=2)
    v.add_argument("--units", type=int, default=32)
    v.add_argument("--repeat-texts", type=int, default=4, help="copies of the validation texts")
    v.add_argument("--rounds", type=int, default=3)
    v.add_argument("--requests", type=int, default=200)
    x = sub.add_parser("xla", help="one long fit with train.jit_compile=auto vs false")
    x.add_argument("--examples", type=int, default=100_000)
    x.add_argument("--max-len", type=int, default=128)
    x.add_argument("--epochs", type=int, default=5)
    x.add_argument("--units", type=int, default=64)
    x.add_argument("--modes", nargs="+", default=["auto", "false"])
    x.add_argument(
        "--rounds", type=int, default=2, help="each mode once a round, the order alternated"
    )
    x.add_argument(
        "--xla-lstm",
        nargs="+",
        default=["bptt"],
        choices=[k.value for k in XlaLstm],
        help="the fused LSTM under XLA (model.xla_lstm): each one with the XLA modes",
    )
    x.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one fit, one mode
    q = sub.add_parser("pause", help="the pause between trials over a long faked search")
    q.add_argument("--trials", type=int, default=500, help="trials of the late search")
    q.add_argument(
        "--window",
        type=int,
        default=60,
        help="trials of the early search, taking turns with the late one's last ones",
    )
    q.add_argument("--epochs", type=int, default=3)
    q.add_argument(
        "--pruner", default="median", choices=[k.value for k in PrunerKind if k.over_epochs]
    )
    rc = sub.add_parser("race", help="racing's error rates (simulated) and savings (replayed)")
    rc.add_argument("--design", default=None, help="a recorded design: DIR/<label>/seed_<n>.npz")
    rc.add_argument("--record", default=None, help="write this search's runs as --design DIR")
    rc.add_argument("--set", nargs="*", default=[], help="config overrides (the store), key=v")
    rc.add_argument("--races", type=int, default=400, help="simulated races per scenario")
    rc.add_argument("--gap", type=float, default=3.0, help="the true gap to find, in points")
    rc.add_argument("--examples", type=int, default=500, help="simulated validation examples")
    rc.add_argument("--seed-sd", type=float, default=0.0, help="latent shift per seed")
    rc.add_argument("--orders", type=int, default=200, help="seed orders a design is replayed")
    rc.add_argument("--metric", default="val_accuracy")
    rc.add_argument(
        "--baseline", default=None, help="a design's label every other is weighed against"
    )
    rc.add_argument("--split-varies", action="store_true", help="the design varied its split")
    rc.add_argument(
        "--bound", action="store_true", help="a design's trainings for a race that knows it"
    )
    rc.add_argument("--first", type=int, default=2)
    rc.add_argument("--most", type=int, default=8)
    rc.add_argument("--margin", type=float, default=1.0, help="equivalence margin, points")
    rc.add_argument("--alpha", type=float, default=0.05)
    rc.add_argument("--futility", type=float, default=0.2, help="conditional power (0: off)")
    rc.add_argument("--resamples", type=int, default=2000)
    k = sub.add_parser("kept", help="a seed-replicate search, search.keep_compiled=0 vs N")
    k.add_argument("--trials", type=int, default=2, help="configurations")
    k.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    k.add_argument("--keep", type=int, default=4, help="search.keep_compiled to compare with 0")
    k.add_argument("--rounds", type=int, default=2)
    k.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    args = parser.parse_args(argv)

    from pipeline.runtime.cli import import_quietly, quiet

    quiet(verbose=False)
    if args.which not in ("startup", "scaling", "race"):
        import_quietly(False)  # C++ start-up logs off the console
    if args.which == "race":
        from pipeline.bench.race import run
    elif args.which == "pooling":
        from pipeline.bench.pooling import run
    elif args.which == "overhead":
        from pipeline.bench.overhead import run
    elif args.which == "memory":
        from pipeline.bench.memory import run
    elif args.which == "scaling":
        from pipeline.bench.scaling import run
    elif args.which == "pruning":
        from pipeline.bench.pruning import run
    elif args.which == "embeddings":
        from pipeline.bench.embeddings import run
    elif args.which == "audit":
        from pipeline.bench.audit import run
    elif args.which == "serve":
        from pipeline.bench.serve import run
    elif args.which == "xla":
        from pipeline.bench.xla import run
    elif args.which == "pause":
        from pipeline.bench.pause import run
    elif args.which == "kept":
        from pipeline.bench.kept import run
    else:
        from pipeline.bench.startup import run
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
