"""`python -m pipeline.bench race`: the racing policy's error rates on simulated races
(`--simulate`, no TensorFlow), and its savings on a recorded full design (`--design DIR`).

Simulated races: two configurations on one validation set. Each example has a latent
difficulty shared by every model; a model gets it right when difficulty + its
configuration's effect + its seed's shift + noise > 0 (the comparisons' own calibration
model, `tests/test_comparisons.py`), the effect set so that the true accuracy gap is the
one asked for. Three scenarios, each `--races` times: identical configurations (a
"beats" either way is false), a true gap of `--gap` points (found: "beats" the right
way), and the same gap against an equivalence verdict (a false "equivalent").

`--record SEARCH --design DIR` writes a search's logged predictions as such a design.
A recorded design (`DIR/<label>/seed_<n>.npz` with `index`, `y`, `probs`, as
`predictions/val.npz` of each trial run) is replayed under `--orders` random seed
orders: the race trains a replicate by reading it. Each replay's verdicts are set beside
the full design's (every configuration on every seed, weighed at once, each pair against
the full design's incumbent) and its trainings beside the design's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats

from pipeline.progress import say
from pipeline.search.racing import (
    BEATS,
    EQUIVALENT,
    WORSE,
    Race,
    RaceSettings,
    look,
    run_race,
)
from pipeline.tracking.records import Predictions

CLASSES = 3
TAU = 0.3  # two models of one configuration disagree on ~9% of the examples
DIFFICULTY = (0.9, 1.0)  # mean and sd of the latent difficulty (~80% accuracy)


def effect_for(points: float) -> float:
    """The latent effect that moves the expected accuracy by `points`."""
    mean, sd = DIFFICULTY
    scale = math.sqrt(sd**2 + TAU**2)
    base = stats.norm.cdf(mean / scale)
    return float(scale * stats.norm.ppf(base + points / 100) - mean)


class SimulatedTask:
    """One validation set and the configurations' true effects; a replicate is drawn on
    demand, the same one for the same (label, seed)."""

    def __init__(self, rng: np.random.Generator, effects: dict[str, float], n: int, seed_sd):
        self.z = rng.normal(DIFFICULTY[0], DIFFICULTY[1], size=n)
        self.y = rng.integers(0, CLASSES, size=n)
        self.effects, self.seed_sd = effects, seed_sd
        self.base_seed = int(rng.integers(2**31))

    def train(self, label: str, seed: int) -> Predictions:
        rng = np.random.default_rng([self.base_seed, seed, sorted(self.effects).index(label)])
        shift = rng.normal(0, self.seed_sd) if self.seed_sd else 0.0
        correct = self.z + self.effects[label] + shift + TAU * rng.normal(size=len(self.y)) > 0
        predicted = np.where(correct, self.y, (self.y + 1) % CLASSES)
        probs = np.full((len(self.y), CLASSES), 0.1)
        probs[np.arange(len(self.y)), predicted] = 0.8
        return Predictions(np.arange(len(self.y)), self.y, probs)


def simulated_verdict(
    rng: np.random.Generator, gap: float, settings: RaceSettings, examples: int, seed_sd: float
) -> tuple[str, int]:
    """(verdict of "better" against "base", trainings) of one simulated race."""
    task = SimulatedTask(rng, {"better": effect_for(gap), "base": 0.0}, examples, seed_sd)
    race = Race(settings, "val_accuracy", list(range(settings.most)), baseline="base")
    run_race(race, ["base", "better"], task.train)
    return race.pairs["better"].verdict, race.trainings


def calibration(
    races: int, gap: float, settings: RaceSettings, examples: int = 500, seed_sd: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """The three error rates (and the mean trainings) over `races` races each."""
    rng = np.random.default_rng(seed)
    null = [simulated_verdict(rng, 0.0, settings, examples, seed_sd) for _ in range(races)]
    real = [simulated_verdict(rng, gap, settings, examples, seed_sd) for _ in range(races)]
    return {
        "false_beats": sum(v in (BEATS, WORSE) for v, _ in null) / races,
        "found": sum(v == BEATS for v, _ in real) / races,
        "false_equivalent": sum(v == EQUIVALENT for v, _ in real) / races,
        "trainings_null": float(np.mean([t for _, t in null])),
        "trainings_gap": float(np.mean([t for _, t in real])),
    }


def record_design(tracker, search: str, out: Path) -> int:
    """Writes a search's finished trial runs as a design (`out/<label>/seed_<n>.npz`,
    each run's logged validation predictions); the number of files written. A label is
    the run's variant, or variant and trial number where one variant spans several
    configurations (a units sweep), so no configuration overwrites another."""
    parent = tracker.find_search(search)
    if parent is None:
        raise SystemExit(f"no search named {search!r} in {tracker.ui_command()}")
    runs = tracker.trial_runs(parent.run_id, status="FINISHED")
    trials_of: dict[str, set] = {}
    for run in runs:
        trials_of.setdefault(run.variant or "", set()).add(run.trial_id)
    written = 0
    for run in runs:
        predictions = tracker.read_predictions(run.run_id)
        if predictions is None:
            raise SystemExit(f"run {run.run_id} logged no predictions (tracking.log_predictions)")
        label = run.variant or ""
        if len(trials_of[label]) > 1 or not label:
            label = f"{label}-trial{run.trial_number}" if label else f"trial{run.trial_number}"
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        p = predictions
        np.savez_compressed(folder / f"seed_{run.seed}.npz", index=p.index, y=p.y,
                            probs=p.probs.astype(np.float32))  # fmt: skip
        written += 1
    return written


def read_design(folder: Path) -> dict[str, dict[int, Predictions]]:
    """label -> seed -> predictions of a recorded full design."""
    design: dict[str, dict[int, Predictions]] = {}
    for path in sorted(folder.glob("*/seed_*.npz")):
        with np.load(path) as f:
            p = Predictions(f["index"], f["y"], f["probs"])
        design.setdefault(path.parent.name, {})[int(path.stem.removeprefix("seed_"))] = p
    if not design:
        raise SystemExit(f"{folder}: no <label>/seed_<n>.npz files")
    return design


def full_verdicts(
    design, settings: RaceSettings, metric: str, baseline: str | None = None
) -> tuple[str, dict[str, str]]:
    """(incumbent, label -> verdict) with every configuration on every seed, one look
    at the whole error rate split over the pairs (against `baseline` when given)."""
    seeds = sorted(set.intersection(*(set(d) for d in design.values())))
    race = Race(settings, metric, seeds, baseline=baseline,
                predictions={k: dict(v) for k, v in design.items()})  # fmt: skip
    incumbent = race.incumbent()
    others = [k for k in design if k != incumbent]
    level = settings.alpha / max(len(others), 1)
    return incumbent, {k: look(race, k, incumbent, level).verdict for k in others}


def replay(
    design, settings: RaceSettings, metric: str, orders: int, seed: int = 0,
    baseline: str | None = None, split_varies: bool = False,
):  # fmt: skip
    """Replays under random seed orders: (share agreeing with the full design's verdicts,
    trainings shares)."""
    incumbent, full = full_verdicts(design, settings, metric, baseline)
    total = sum(len(v) for v in design.values())
    seeds = sorted(set.intersection(*(set(d) for d in design.values())))
    rng = np.random.default_rng(seed)
    agree, shares = [], []
    for _ in range(orders):
        order = [int(s) for s in rng.permutation(seeds)]
        race = Race(settings, metric, order, baseline=baseline, split_varies=split_varies)
        run_race(race, sorted(design), lambda label, s: design[label][s])
        raced = {k: p.verdict for k, p in race.pairs.items() if p.incumbent == incumbent}
        agree.append(race.incumbent() == incumbent and all(
            raced.get(k) == v or (v not in (BEATS, WORSE, EQUIVALENT) and raced.get(k) not in
                                  (BEATS, WORSE, EQUIVALENT))
            for k, v in full.items()
        ))  # fmt: skip
        shares.append(race.trainings / total)
    return incumbent, full, float(np.mean(agree)), np.asarray(shares)


def bound(
    design, settings: RaceSettings, metric: str, orders: int, seed: int = 0,
    baseline: str | None = None,
) -> np.ndarray:  # fmt: skip
    """Trainings shares of a race that knows the answer, under the replay's seed orders:
    each pair the full design decides stops at the first prefix of the order whose one
    look at the full design's level gives its verdict (no spending over looks), each
    pair it leaves undecided stops at its first seeds, the incumbent gets what its
    longest pair needs. No race whose looks are as strict as the full design's spends
    less."""
    incumbent, full = full_verdicts(design, settings, metric, baseline)
    level = settings.alpha / max(len(full), 1)
    total = sum(len(v) for v in design.values())
    seeds = sorted(set.intersection(*(set(d) for d in design.values())))
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(orders):
        order = [int(s) for s in rng.permutation(seeds)]
        needed = {label: settings.first for label in full}
        for label in (k for k, v in full.items() if v in (BEATS, WORSE, EQUIVALENT)):
            for n in range(settings.first, len(order) + 1):
                seen = {k: {s: design[k][s] for s in order[:n]} for k in (label, incumbent)}
                race = Race(settings, metric, order[:n], baseline=baseline, predictions=seen)
                if look(race, label, incumbent, level).verdict == full[label]:
                    needed[label] = n
                    break
        shares.append((sum(needed.values()) + max(needed.values())) / total)
    return np.asarray(shares)


def run(args) -> None:
    if args.record is not None:
        from pipeline.runtime.cli import composed
        from pipeline.tracking import open_tracker

        out = Path(args.design or f"mlruns/designs/{args.record}")
        written = record_design(open_tracker(composed(args.set).tracking), args.record, out)
        say(f"{written} runs of search {args.record!r} written to {out}")
        return
    settings = RaceSettings(
        first=args.first, most=args.most, margin=args.margin / 100, alpha=args.alpha,
        futility=args.futility, resamples=args.resamples,
    )  # fmt: skip
    if (problem := settings.problem()) is not None:
        raise SystemExit(problem)
    if args.design is None:
        rates = calibration(args.races, args.gap, settings, args.examples, args.seed_sd)
        say(
            f"{args.races} races each, first {settings.first} seeds, most {settings.most}, "
            f"margin ±{args.margin:g} points, alpha {settings.alpha:g}, {args.examples} "
            f"validation examples, seed shift sd {args.seed_sd:g}:\n"
            f"  identical configurations called different: {rates['false_beats']:.1%} "
            f"(goal <= 5%; {rates['trainings_null']:.1f} trainings a race)\n"
            f"  a {args.gap:g}-point gap found: {rates['found']:.1%} (goal >= 80%; "
            f"{rates['trainings_gap']:.1f} trainings a race)\n"
            f"  that gap called equivalent: {rates['false_equivalent']:.1%} (goal <= 5%)"
        )
        return
    design = read_design(Path(args.design))
    if args.bound:
        shares = bound(design, settings, args.metric, args.orders, baseline=args.baseline)
        say(
            f"{args.orders} seed orders, a race that knows the full design's verdicts and "
            f"looks once at its level: a median {np.median(shares):.1%} of its trainings "
            f"(10-90%: {np.percentile(shares, 10):.1%}-{np.percentile(shares, 90):.1%}); "
            f"at most 50% in {np.mean(shares <= 0.5):.1%} of orders"
        )
        return
    incumbent, full, agree, shares = replay(
        design, settings, args.metric, args.orders, baseline=args.baseline,
        split_varies=args.split_varies,
    )  # fmt: skip
    say(
        f"full design: {len(design)} configurations x "
        f"{min(len(v) for v in design.values())} seeds; incumbent {incumbent}; verdicts "
        + ", ".join(f"{k}: {v}" for k, v in sorted(full.items()))
        + f"\n{args.orders} seed orders: the race reached the full design's verdicts in "
        f"{agree:.1%} (goal >= 90%) with a median {np.median(shares):.1%} of its trainings "
        f"(goal <= 50%; 10-90%: {np.percentile(shares, 10):.1%}-{np.percentile(shares, 90):.1%})"
    )
