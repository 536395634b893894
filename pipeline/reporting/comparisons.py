"""Comparisons with the power to see a real gap, and the honesty to say when they can't.

Every validation prediction is evidence. For two configurations on the same data, the
difference of the objective is estimated with a two-level bootstrap
(`scipy.stats.bootstrap` resamples the seeds; within each drawn seed the validation
examples are resampled), so the interval holds both sources of variance: training
randomness (seeds) and the finite validation set (examples), plus the split itself when
`search.vary_split` redrew it per seed. McNemar's test per seed (statsmodels) is a
cross-check on accuracy. Runs logged without predictions fall back to a paired t-test
over seeds. p-values are adjusted over the comparisons of one data set
(`statsmodels.stats.multitest`, Holm by default).

Three verdicts, never two:
- "A beats B": adjusted p < alpha;
- "A and B are equivalent within ±m points": the 90% interval lies inside ±m (TOST);
- "underpowered": neither; the sentence says roughly how many seeds would detect the gap
  (paired t-test power from the observed seed-level spread, statsmodels).
Pure NumPy/SciPy/statsmodels: reports never import TensorFlow.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import minimised
from pipeline.reporting.paired import (
    PER_EXAMPLE,
    RESAMPLES,
    PairedEvidence,
    bootstrap_p,
    pair_predictions,
    two_level_bootstrap,
)
from pipeline.tracking.records import Predictions

# statsmodels' multipletests methods (`pipeline.report --adjust`) as a report names them.
ADJUSTMENTS = {
    "holm": "Holm",
    "bonferroni": "Bonferroni",
    "sidak": "Sidak",
    "holm-sidak": "Holm-Sidak",
    "simes-hochberg": "Hochberg",
    "hommel": "Hommel",
    "fdr_bh": "Benjamini-Hochberg (FDR)",
    "fdr_by": "Benjamini-Yekutieli (FDR)",
    "fdr_tsbh": "two-stage Benjamini-Hochberg (FDR)",
    "fdr_tsbky": "two-stage Benjamini-Krieger-Yekutieli (FDR)",
}
ALPHA = 0.05
POWER = 0.8


# ---------------------------------------------------------------- the comparison


@dataclass
class Comparison:
    data: str
    a: str
    b: str
    metric: str
    seeds: int
    examples: int | None  # validation examples per seed (None: seed-level evidence only)
    diff: float  # a - b, in the metric's units
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    p_value: float
    seed_spread: float  # std of the per-seed differences (nan below 2 seeds)
    margin: float  # equivalence margin, in the metric's units
    method: str
    sources: str  # what the intervals resample
    mcnemar: list[float] = field(default_factory=list)
    p_adjusted: float = float("nan")
    n_tests: int = 1
    verdict: str = ""  # beats | equivalent | underpowered
    seeds_needed: int | None = None
    # The part of the interval's spread more seeds do not shrink: the validation examples'
    # own noise (two-level bootstrap variance minus the seed mean's); nan: seed-level only.
    example_sd: float = float("nan")
    # True: no number of seeds can settle it on this validation split (the examples' noise
    # alone is wider than the gap to detect); a larger split or search.vary_split is needed.
    split_limited: bool = False
    # True: every seed drew its own train/validation split (search.vary_split), so the
    # examples' noise is part of the seed-to-seed spread and shrinks with more seeds too.
    split_varies: bool = False
    adjustment: str = "holm"  # statsmodels' multipletests method the p-values went through

    @property
    def scale(self) -> tuple[float, str]:
        return (1.0, "") if minimised(self.metric) else (100.0, " points")

    def margin_text(self) -> str:
        scale, unit = self.scale
        value = self.margin * scale
        return f"±{value:g}{unit.removesuffix('s') if value == 1 else unit}"

    def oriented(self) -> tuple[str, str, float, tuple[float, float]]:
        """(better, worse, margin of better over worse >= 0, its 95% interval)."""
        lo, hi = self.ci95
        a_better = self.diff < 0 if minimised(self.metric) else self.diff > 0
        sign = -1.0 if minimised(self.metric) else 1.0
        if a_better:
            gap, interval = sign * self.diff, sorted((sign * lo, sign * hi))
            return self.a, self.b, gap, (interval[0], interval[1])
        gap, interval = -sign * self.diff, sorted((-sign * lo, -sign * hi))
        return self.b, self.a, gap, (interval[0], interval[1])

    def decide(self, alpha: float = ALPHA) -> None:
        lo90, hi90 = self.ci90
        if np.isfinite(self.p_adjusted) and self.p_adjusted < alpha and self.diff != 0:
            self.verdict = "beats"
        elif -self.margin < lo90 and hi90 < self.margin:
            self.verdict = "equivalent"
        else:
            self.verdict = "underpowered"
            self.seeds_needed = seeds_needed(self, alpha)
            self.split_limited = self.seeds_needed is None and self.example_sd > 0

    def _fmt(self, value: float, signed: bool = False) -> str:
        scale, _ = self.scale
        return f"{value * scale:+.2f}" if signed else f"{value * scale:.2f}"

    def detail(self) -> str:
        scale, unit = self.scale
        lo, hi = self.ci95
        parts = [f"{self.metric} {self.a} - {self.b} = {self._fmt(self.diff, True)}{unit}"]
        parts.append(f"95% interval [{self._fmt(lo, True)}, {self._fmt(hi, True)}]")
        parts.append(f"{self.method} p={self.p_value:.3g}")
        if self.n_tests > 1:
            name = ADJUSTMENTS.get(self.adjustment, self.adjustment)
            parts.append(f"{name}-adjusted p={self.p_adjusted:.3g} over {self.n_tests} comparisons")
        if self.mcnemar:
            parts.append("McNemar per seed p=" + ", ".join(f"{p:.2g}" for p in self.mcnemar))
        size = f"{self.seeds} seeds" + (f" x {self.examples} examples" if self.examples else "")
        parts.append(size)
        return "; ".join(parts)

    def short(self) -> str:
        """The verdict in a clause, for the report's answer paragraph."""
        scale, unit = self.scale
        lo, hi = self.ci95
        interval = (
            f"{self._fmt(self.diff, True)}{unit} [{self._fmt(lo, True)}, {self._fmt(hi, True)}]"
        )
        if self.verdict == "beats":
            better, worse, gap, (blo, bhi) = self.oriented()
            return (
                f"{better} beats {worse} by {gap * scale:.2f}{unit} "
                f"[{blo * scale:.2f}, {bhi * scale:.2f}]"
            )
        if self.verdict == "equivalent":
            return f"{self.a} and {self.b} are equivalent within {self.margin_text()} ({interval})"
        need = f"; {self.seeds_text()} needed" if self.seeds_needed else ""
        if self.split_limited:
            need = f"; no number of seeds settles it on {self.examples} validation examples"
        return f"{self.a} vs {self.b} is underpowered ({interval}{need})"

    def seeds_text(self) -> str:
        """ "about N seeds", never a number the comparison has already run: the seed-level
        power estimate ignores the validation examples' own noise, which the two-level
        interval carries, so at or below the seeds run it can only say "more than"."""
        if self.seeds_needed is not None and self.seeds_needed > self.seeds:
            return f"about {self.seeds_needed} seeds"
        return f"more than {self.seeds} seeds"

    def sentence(self) -> str:
        """Plain words: the difference with its interval first, then the evidence."""
        scale, unit = self.scale
        better, worse, gap, (lo, hi) = self.oriented()
        margin = self.margin_text()
        if self.verdict == "beats":
            return (
                f"{better} beats {worse} by {gap * scale:.2f}{unit} "
                f"[{lo * scale:.2f}, {hi * scale:.2f}] ({self.detail()})"
            )
        if self.verdict == "equivalent":
            lo90, hi90 = self.ci90
            return (
                f"{self.a} and {self.b} are equivalent within {margin}: "
                f"{self._fmt(self.diff, True)}{unit}, 90% interval "
                f"[{self._fmt(lo90, True)}, {self._fmt(hi90, True)}] inside the margin "
                f"({self.detail()})"
            )
        target = max(abs(self.diff), self.margin)
        need = (
            f"{self.seeds_text()} would be needed to detect a gap of {target * scale:.2f}{unit}"
            if self.seeds_needed
            else "more seeds are needed (no spread between seeds to plan with)"
        )
        if self.split_limited:
            z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
            need = (
                f"no number of seeds is enough: the {self.examples} validation examples alone "
                f"leave a standard error of {self.example_sd * scale:.2f}{unit}, and detecting "
                f"a gap of {target * scale:.2f}{unit} with {POWER:.0%} power needs at most "
                f"{target / z * scale:.2f}; a larger validation split (data.val_fraction) or "
                "search.vary_split=true (each seed its own split) is what would settle it"
            )
        return (
            f"underpowered: the data cannot tell {self.a} from {self.b} "
            f"({self._fmt(self.diff, True)}{unit}, neither a difference nor equivalent within "
            f"{margin}); {need} ({self.detail()})"
        )


def examples_noise(per_seed: np.ndarray, distribution: np.ndarray) -> float:
    """The part of a two-level bootstrap's spread more seeds leave as it is: its variance
    minus the seeds' mean's (the validation examples' own noise)."""
    seed_var = per_seed.var(ddof=1) / len(per_seed) if len(per_seed) > 1 else 0.0
    return math.sqrt(max(float(distribution.var()) - seed_var, 0.0))


def floor_room(target: float, floor: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """se(n)^2 left for the seeds once the examples' noise `floor` is taken from what
    detecting `target` with `power` allows; <= 0: no number of seeds is enough."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return (target / z) ** 2 - floor**2


def seeds_needed(c: Comparison, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds to detect max(|diff|, margin) with `power`: a paired t-test over seeds, or,
    when the interval also carries the validation examples' noise (`example_sd`, which
    more seeds leave as it is), the normal approximation with that noise as a floor:
    se(n)^2 = spread^2 / n + example_sd^2. None: no spread to plan with, or no number of
    seeds is enough (the floor alone is too wide). With each seed on its own split there
    is no floor: the spread over seeds already holds the split's noise."""
    from statsmodels.stats.power import TTestPower

    spread = c.seed_spread
    if not np.isfinite(spread) or spread <= 0:
        return None
    target = max(abs(c.diff), c.margin)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    floor = c.example_sd if np.isfinite(c.example_sd) and not c.split_varies else 0.0
    if floor > 0:
        room = floor_room(target, floor, alpha, power)
        return None if room <= 0 else max(2, math.ceil(spread**2 / room))
    effect = target / spread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns when its root finder gives up
        try:
            n = float(TTestPower().solve_power(effect_size=effect, alpha=alpha, power=power))
        except (ValueError, RuntimeError):
            n = float("nan")
    if not np.isfinite(n):  # beyond the solver's bracket: the normal approximation
        n = (z / effect) ** 2 + 1
    return max(2, math.ceil(n))


def compare_predictions(
    data: str,
    a: str,
    b: str,
    metric: str,
    evidence: PairedEvidence,
    margin: float,
    resamples: int = RESAMPLES,
) -> Comparison:
    kind = PER_EXAMPLE[metric]
    per_seed = evidence.per_seed(kind)
    estimate = float(per_seed.mean())
    distribution = two_level_bootstrap(evidence, kind, resamples)
    spread = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan")
    example_sd = examples_noise(per_seed, distribution)
    return Comparison(
        data=data,
        a=a,
        b=b,
        metric=metric,
        seeds=len(evidence.seeds),
        examples=evidence.n_examples,
        diff=estimate,
        ci95=tuple(float(v) for v in np.percentile(distribution, [2.5, 97.5])),
        ci90=tuple(float(v) for v in np.percentile(distribution, [5, 95])),
        p_value=bootstrap_p(distribution, estimate),
        seed_spread=spread,
        example_sd=example_sd,
        margin=margin,
        method="two-level bootstrap",
        sources="seeds and validation examples",
        mcnemar=evidence.mcnemar(),
    )


def compare_seeds(data: str, a: str, b: str, metric: str, diffs: np.ndarray, margin: float):
    """Seed-level fallback (no per-example predictions): paired t over seeds."""
    n = len(diffs)
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1)) if n > 1 else float("nan")
    if n > 1 and sd > 0:
        se = sd / math.sqrt(n)
        t95, t90 = stats.t.ppf(0.975, n - 1), stats.t.ppf(0.95, n - 1)
        ci95, ci90 = (mean - t95 * se, mean + t95 * se), (mean - t90 * se, mean + t90 * se)
        p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    else:  # one seed, or the same difference on every seed: nothing to test against
        ci95 = ci90 = (float("-inf"), float("inf")) if n < 2 else (mean, mean)
        p = 1.0 if n < 2 or mean == 0 else 0.0
    return Comparison(
        data=data,
        a=a,
        b=b,
        metric=metric,
        seeds=n,
        examples=None,
        diff=mean,
        ci95=ci95,
        ci90=ci90,
        p_value=p,
        seed_spread=sd,
        margin=margin,
        method="paired t-test over seeds",
        sources="seeds only (no per-example predictions logged)",
    )


def comparisons(
    runs: pd.DataFrame,
    predictions: dict[tuple[str, str], dict[int, Predictions]],
    metric: str,
    baseline: str | None = None,
    margin_points: float = 1.0,
    adjust: str = "holm",
    alpha: float = ALPHA,
    resamples: int = RESAMPLES,
) -> list[Comparison]:
    """Each configuration against `baseline` (k-1 tests), or every pair, per data set.

    `runs` has one row per trial run (`data`, `label`, `seed`, the metric);
    `predictions[(data, label)][seed]` holds what the runs logged.
    """
    from statsmodels.stats.multitest import multipletests

    margin = margin_points / (1.0 if minimised(metric) else 100.0)
    out: list[Comparison] = []
    for data, frame in runs.groupby("data", sort=False):
        labels = list(dict.fromkeys(frame["label"]))
        base = resolve_baseline(baseline, labels) if baseline else None
        pairs = [(c, base) for c in labels if c != base] if base else combinations(labels, 2)
        found: list[Comparison] = []
        for a, b in pairs:
            pa, pb = predictions.get((data, a), {}), predictions.get((data, b), {})
            evidence = pair_predictions(pa, pb) if metric in PER_EXAMPLE else None
            if evidence is not None and len(evidence.seeds) >= 2:
                found.append(
                    compare_predictions(str(data), a, b, metric, evidence, margin, resamples)
                )
                continue
            by_seed = frame.pivot_table(
                index="seed", columns="label", values=metric, aggfunc="last"
            )
            if a not in by_seed or b not in by_seed:
                continue
            pair = by_seed[[a, b]].dropna()
            if len(pair) >= 2:
                diffs = (pair[a] - pair[b]).to_numpy(dtype=float)
                found.append(compare_seeds(str(data), a, b, metric, diffs, margin))
        tested = [c for c in found if np.isfinite(c.p_value)]
        if len(tested) == 1:  # nothing to adjust for
            tested[0].p_adjusted = tested[0].p_value
        elif tested:
            adjusted = multipletests([c.p_value for c in tested], alpha=alpha, method=adjust)[1]
            for c, p in zip(tested, adjusted, strict=True):
                c.p_adjusted, c.n_tests, c.adjustment = float(p), len(tested), adjust
        for c in found:
            c.decide(alpha)
        out.extend(found)
    return out


def against_reference(
    data: str,
    leader: str,
    reference: str,
    runs: pd.DataFrame,
    reference_score: float,
    leader_predictions: dict[int, Predictions],
    reference_predictions: dict[int | None, Predictions],
    metric: str,
    margin_points: float = 1.0,
    alpha: float = ALPHA,
    resamples: int = RESAMPLES,
) -> Comparison | None:
    """The best configuration against a reference model (one test, nothing to adjust
    over). A reference fitted once on the search's split has no training randomness: its
    predictions pair with every seed of the leader (with `search.vary_split`, each seed's
    split has its own fit). Two-level bootstrap like every comparison; with no
    predictions, a t-test of the leader's seeds against the reference's score; None when
    the leader has fewer than two seeds."""
    margin = margin_points / (1.0 if minimised(metric) else 100.0)
    if set(reference_predictions) == {None}:
        shared = reference_predictions[None]
        reference_predictions = {seed: shared for seed in leader_predictions}
    evidence = (
        pair_predictions(leader_predictions, reference_predictions)
        if metric in PER_EXAMPLE
        else None
    )
    if evidence is not None and len(evidence.seeds) >= 2:
        found = compare_predictions(data, leader, reference, metric, evidence, margin, resamples)
    else:
        scores = runs[(runs["data"] == data) & (runs["label"] == leader)][metric].dropna()
        if len(scores) < 2:
            return None
        diffs = scores.to_numpy(dtype=float) - reference_score
        found = compare_seeds(data, leader, reference, metric, diffs, margin)
        found.sources = "the leader's seeds (the reference is fitted once)"
    found.p_adjusted = found.p_value
    found.decide(alpha)
    return found


def resolve_baseline(name: str, labels: list[str]) -> str:
    """The configuration a baseline name means: an exact label, or the one label that
    starts with it (`classic` -> `classic`, `attn-tanh` -> `attn-tanh units=32`); labels of
    older versions (`attention-tanh`) are read as today's."""
    from pipeline.models.registry import canonical_label

    name = canonical_label(name)
    if name in labels:
        return name
    matches = [lab for lab in labels if lab.split(" ")[0] == name or lab.startswith(f"{name} ")]
    if len(matches) == 1:
        return matches[0]
    from pipeline.errors import SearchError

    known = ", ".join(labels)
    raise SearchError(
        f"--baseline: '{name}' matches {len(matches)} configurations; one of: {known}"
    )
