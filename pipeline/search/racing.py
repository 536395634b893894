"""Racing: seeds where a verdict is undecided, and a stop once the question is answered.

Every configuration starts with `first` seeds. After each round, each one is weighed
against the incumbent (the best by mean objective, or `search.baseline`) with the
report's evidence: the two-level paired bootstrap on per-example predictions
(`pipeline.reporting.paired`). A pair is decided when one beats the other, or when both
are equivalent within the margin (TOST); a configuration decisively worse than the
incumbent gets no more seeds; an undecided pair gets one more seed on each side it lacks,
up to `most`; the race ends when every pair is decided, every undecided one is at `most`
seeds (or limited by its validation split), or `budget` trainings are spent.

Deciding after every round would inflate false verdicts. The error rate is split over
the pairs (Bonferroni: alpha / (configurations - 1)) and each pair spends its share over
its looks with Lan and DeMets' Pocock-type spending function
(alpha(t) = alpha * ln(1 + (e - 1) t), t = seeds / most; Lan & DeMets 1983, Biometrika
70:659; Kim & DeMets 1987). The look at t_k tests at the nominal level whose boundary
makes the chance of a first crossing at t_k exactly alpha(t_k) - alpha(t_{k-1}) for a
statistic that accumulates like Brownian motion (corr(Z_j, Z_k) = sqrt(t_j / t_k)), as
group-sequential designs compute it (Jennison & Turnbull 2000, ch. 7); here by a fixed,
seeded simulation of those paths. A configuration's looks go on spending its one error
rate when the incumbent changes. Equivalence uses the same levels (both one-sided tests
of TOST).

A pair that more seeds are unlikely to decide stops receiving them (futility, by
conditional power under the current estimate: Lan, Simon & Halperin 1982): projected to
`most` seeds with the current gap and its standard error shrinking as 1/sqrt(seeds),
neither a difference nor an equivalence would be shown. Its verdict is `futile`, which
the report reads as undecided. Pure NumPy/SciPy: no TensorFlow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from pipeline.config import minimised
from pipeline.models.scores import example_losses, macro_f1
from pipeline.reporting.comparisons import examples_noise, floor_room
from pipeline.reporting.paired import (
    PER_EXAMPLE,
    bootstrap_p,
    pair_predictions,
    two_level_bootstrap,
)
from pipeline.tracking.records import Predictions

BEATS, WORSE, EQUIVALENT, UNDECIDED, SPLIT_LIMITED, FUTILE, FAILED = (
    "beats",
    "worse",
    "equivalent",
    "undecided",
    "split-limited",
    "futile",
    "failed",
)
PATHS = 200_000  # simulated Brownian paths behind the nominal levels (fixed seed)


@dataclass(frozen=True)
class RaceSettings:
    """`search.race.*`: seeds a configuration starts with and may reach, trainings in all
    (None: no limit but `most` per configuration), the equivalence margin (metric units)
    and the error rate spent over every look of a pair."""

    first: int = 2
    most: int = 8
    budget: int | None = None
    margin: float = 0.01
    alpha: float = 0.05
    futility: float = 0.2  # conditional power below which a pair gets no more seeds (0: off)
    resamples: int = 2000

    def problem(self) -> str | None:
        """What is wrong with these settings, as `key: why` (None: nothing)."""
        from pipeline.config.seeds import race_problem

        margin_points = self.margin * 100  # accuracy-like: the config's margin is in points
        return race_problem(self.first, self.most, self.budget, margin_points, self.alpha)


def spent(alpha: float, t: float) -> float:
    """The error rate spent by information fraction `t` (Pocock-type, Lan-DeMets)."""
    return alpha * math.log(1 + (math.e - 1) * min(max(t, 0.0), 1.0))


@functools.cache
def nominal_levels(alpha: float, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """Two-sided nominal levels of looks at information `fractions` (increasing): each
    look's boundary is set so that the chance of first crossing there is what the
    spending function adds at that fraction."""
    rng = np.random.default_rng(20260101)
    steps = np.diff(np.asarray((0.0, *fractions)))
    paths = np.cumsum(rng.normal(size=(PATHS, len(steps))) * np.sqrt(steps), axis=1)
    z = np.abs(paths / np.sqrt(np.asarray(fractions)))
    alive = np.ones(PATHS, dtype=bool)
    levels, before = [], 0.0
    for k, t in enumerate(fractions):
        target = (spent(alpha, t) - before) * PATHS  # paths to stop at this look
        before = spent(alpha, t)
        inside = np.sort(z[alive, k])[::-1]
        n = int(round(target))
        c = inside[n] if 0 < n < len(inside) else (np.inf if n <= 0 else 0.0)
        alive &= z[:, k] < c
        levels.append(float(2 * stats.norm.sf(c)))
    return tuple(levels)


@dataclass
class Pair:
    """One configuration against the incumbent, and what the last look said."""

    label: str
    incumbent: str
    verdict: str = UNDECIDED
    seeds: int = 0
    diff: float = float("nan")  # label - incumbent, metric units (oriented: + is better)
    level: float = 0.0  # the level of the last look
    looks: tuple[float, ...] = ()  # information fractions of the label's looks so far


@dataclass
class Race:
    """The state of a race: each configuration's seeds and predictions, the pairs'
    verdicts, the rounds so far and why it stopped."""

    settings: RaceSettings
    metric: str
    seed_order: list[int]
    baseline: str | None = None
    split_varies: bool = False
    predictions: dict[str, dict[int, Predictions]] = field(default_factory=dict)
    pairs: dict[str, Pair] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    rounds: list[str] = field(default_factory=list)
    stopped: str = ""
    names: dict[str, str] = field(default_factory=dict)  # how a label is shown, if not as is

    @property
    def trainings(self) -> int:
        return sum(len(p) for p in self.predictions.values())

    def seeds_of(self, label: str) -> list[int]:
        return sorted(self.predictions.get(label, {}))

    def score(self, label: str) -> float:
        """Mean objective over the label's seeds, oriented so that higher is better."""
        kind = PER_EXAMPLE[self.metric]
        values = [_score(p, kind) for p in self.predictions[label].values()]
        return float(np.mean(values)) * (-1 if minimised(self.metric) else 1)

    def incumbent(self) -> str:
        if self.baseline is not None and self.baseline not in self.dropped:
            return self.baseline
        alive = [x for x, p in self.predictions.items() if p and x not in self.dropped]
        return max(alive, key=self.score)

    def allocation(self) -> dict[str, int]:
        return {label: len(p) for label, p in self.predictions.items()}


def _score(p: Predictions, kind: str) -> float:
    """One replicate's objective from its validation predictions."""
    predicted = p.probs.argmax(-1)
    if kind == "accuracy":
        return float(np.mean(predicted == p.y))
    if kind == "loss":
        return float(np.mean(example_losses(p.probs, p.y)))
    return float(macro_f1(p.y, predicted, p.probs.shape[-1]))


def look(race: Race, label: str, incumbent: str, level: float) -> Pair:
    """Weigh `label` against `incumbent` on their shared seeds at `level`."""
    s = race.settings
    evidence = pair_predictions(race.predictions[label], race.predictions[incumbent])
    pair = Pair(label, incumbent, seeds=0 if evidence is None else len(evidence.seeds))
    if evidence is None or len(evidence.seeds) < 2:
        return pair
    kind = PER_EXAMPLE[race.metric]
    sign = -1.0 if minimised(race.metric) else 1.0
    per_seed = evidence.per_seed(kind) * sign
    estimate = float(per_seed.mean())
    distribution = two_level_bootstrap(evidence, kind, s.resamples) * sign
    pair.diff, pair.level = estimate, level
    lo, hi = np.percentile(distribution, [100 * level, 100 * (1 - level)])
    if bootstrap_p(distribution, estimate) < level:
        pair.verdict = BEATS if estimate > 0 else WORSE
    elif -s.margin < lo and hi < s.margin:
        pair.verdict = EQUIVALENT
    elif not race.split_varies and _split_limited(per_seed, distribution, s):
        pair.verdict = SPLIT_LIMITED
    elif _futile(estimate, float(np.std(distribution)), len(per_seed), level, s):
        pair.verdict = FUTILE
    return pair


def _futile(estimate: float, se: float, seeds: int, level: float, s: RaceSettings) -> bool:
    """Neither verdict has conditional power `s.futility` at `most` seeds, the gap
    staying what it is now and its standard error shrinking as 1/sqrt(seeds) (looked at
    from first + 1 seeds: two seeds say little of their own spread)."""
    if not s.futility or seeds < s.first + 1 or seeds >= s.most or se <= 0:
        return False
    projected = se * math.sqrt(seeds / s.most)
    power = stats.norm.isf(s.futility)  # the z a verdict needs beyond its boundary
    difference = abs(estimate) / projected > stats.norm.isf(level / 2) - power
    equivalence = abs(estimate) + (stats.norm.isf(level) - power) * projected < s.margin
    return not (difference or equivalence)


def _split_limited(per_seed: np.ndarray, distribution: np.ndarray, s: RaceSettings) -> bool:
    """The report's rule (`comparisons.seeds_needed`), once the pair has half its seeds (a
    steadier estimate of the floor): no number of seeds detects max(|gap|, margin),
    because the validation examples' noise alone is wider."""
    if len(per_seed) < max(s.first + 1, s.most // 2):
        return False
    target = max(s.margin, abs(float(per_seed.mean())))
    return floor_room(target, examples_noise(per_seed, distribution), s.alpha) <= 0


# A round's assignments, (label, seed), trained; each one's validation predictions, None
# for one that failed (an assignment left out was not trained).
RoundTrainer = Callable[[list[tuple[str, int]]], dict[tuple[str, int], Predictions | None]]


def one_by_one(train: Callable[[str, int], Predictions | None]) -> RoundTrainer:
    """A round trained in order by `train(label, seed)`, in this process; a label that
    failed gets none of its later seeds."""

    def train_round(assignments: list[tuple[str, int]]):
        results: dict[tuple[str, int], Predictions | None] = {}
        failed: set[str] = set()
        for label, seed in assignments:
            if label not in failed:
                results[label, seed] = train(label, seed)
                if results[label, seed] is None:
                    failed.add(label)
        return results

    return train_round


def run_race(
    race: Race,
    labels: list[str],
    train: Callable[[str, int], Predictions | None] | None = None,
    say: Callable[[str], None] = lambda line: None,
    train_round: RoundTrainer | None = None,
) -> Race:
    """Race `labels`: `train(label, seed)` trains one replicate and gives its validation
    predictions, or `train_round` a round's assignments at once (cluster racers); a
    replicate already in `race.predictions` is not trained again."""
    s = race.settings
    train_round = train_round or one_by_one(train)
    for label in labels:
        race.predictions.setdefault(label, {})
    _give_seeds(race, {label: s.first for label in labels}, train_round)
    while True:
        alive = [x for x in labels if x not in race.dropped]
        incumbent = race.incumbent()
        undecided = _weigh(race, alive, incumbent)
        decided = sum(p.verdict != UNDECIDED for p in race.pairs.values())
        shown = race.names.get
        seeds = ", ".join(f"{shown(k, k)}: {n}" for k, n in race.allocation().items())
        race.rounds.append(
            f"round {len(race.rounds) + 1}: {len(alive)} alive, incumbent "
            f"{shown(incumbent, incumbent)}, seeds {{{seeds}}}, {decided}/{len(race.pairs)} "
            "pairs decided"
        )
        say(race.rounds[-1])
        if not undecided:
            race.stopped = "every pair is decided" + _left_undecided(race)
            return race
        wanted = {}
        for pair in undecided:
            for label in (pair.label, pair.incumbent):
                if len(race.predictions[label]) < s.most:
                    wanted[label] = max(wanted.get(label, 0), len(race.predictions[label]) + 1)
        if not wanted:
            race.stopped = f"the undecided pairs are at search.race.most={s.most} seeds"
            return race
        room = None if s.budget is None else s.budget - race.trainings
        if room is not None and room < sum(n - len(race.predictions[x]) for x, n in wanted.items()):
            race.stopped = f"search.race.budget={s.budget} trainings spent"
            return race
        _give_seeds(race, wanted, train_round)


def _left_undecided(race: Race) -> str:
    """What the stop line says of pairs left undecided on purpose."""
    verdicts = [p.verdict for p in race.pairs.values()]
    notes = []
    if limited := verdicts.count(SPLIT_LIMITED):
        notes.append(f"{limited} split-limited: no number of seeds settles them on this "
                     "validation split")  # fmt: skip
    if futile := verdicts.count(FUTILE):
        notes.append(f"{futile} futile: {race.settings.most} seeds would not settle them "
                     "at their current gap")  # fmt: skip
    return f" ({'; '.join(notes)})" if notes else ""


def _weigh(race: Race, alive: list[str], incumbent: str) -> list[Pair]:
    """Look at every alive configuration against the incumbent; the undecided pairs."""
    s = race.settings
    others = [x for x in alive if x != incumbent]
    share = s.alpha / max(len(race.predictions) - 1, 1)  # each pair's error rate
    undecided = []
    for label in others:
        before = race.pairs.get(label)
        if before is not None and before.incumbent == incumbent and before.verdict != UNDECIDED:
            continue  # decided against this incumbent already
        shared = len(set(race.predictions[label]) & set(race.predictions[incumbent]))
        # a label's looks go on spending one error rate whoever the incumbent is (a new
        # incumbent does not hand it a fresh alpha)
        looks = before.looks if before is not None else ()
        t = min(shared / s.most, 1.0)
        if looks and t <= looks[-1]:  # no new shared seed since its last look
            waiting = Pair(label, incumbent, seeds=shared, looks=looks)
            race.pairs[label] = waiting
            undecided.append(waiting)
            continue
        level = nominal_levels(share, (*looks, t))[-1]
        pair = look(race, label, incumbent, level)
        pair.looks = (*looks, t)
        race.pairs[label] = pair
        if pair.verdict == WORSE:
            race.dropped.add(label)
        elif pair.verdict == UNDECIDED:
            undecided.append(pair)
    race.pairs.pop(incumbent, None)
    return undecided


def _give_seeds(race: Race, wanted: Mapping[str, int], train_round: RoundTrainer) -> None:
    """Train each label up to its wanted number of seeds, in the race's seed order, as one
    round; a replicate that failed (None) takes its configuration out of the race."""
    assignments = []
    for label, n in wanted.items():
        have = race.predictions[label]
        if label not in race.dropped:
            missing = [seed for seed in race.seed_order if seed not in have]
            assignments += [(label, seed) for seed in missing[: max(n - len(have), 0)]]
    if not assignments:
        return
    for (label, seed), predictions in train_round(assignments).items():
        if predictions is None:
            race.dropped.add(label)
            race.pairs[label] = Pair(label, "", verdict=FAILED)
        else:
            race.predictions[label][seed] = predictions
