"""`search.stop.patience`: a search that is done stops. After `patience` trials in a row
that did not beat the best by more than the noise (the validation set's standard error of
the objective at the best score), keras-tuner's oracle answers STOPPED to the next
request for a trial (`pipeline.search.oracles.PatienceOracle`): the loop ends as when
`tuner.max_trials` is reached, on one process or on a cluster's chief, and a resumed
search applies the rule to the trials it reloads. The rule itself is plain Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import minimised
from pipeline.search.state_journal import replay

STOP_REASON = "stop_reason"  # the oracle's state key (oracle.json) for why it stopped


def noise(score: float, examples: int) -> float:
    """The standard error of a proportion-like objective (accuracy, macro-F1) at `score`
    on `examples` validation examples."""
    p = min(max(score, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / max(examples, 1))


@dataclass(frozen=True)
class Stop:
    after: int  # trials seen when the rule fired
    best: float
    best_trial: int  # 1-based, in the order trials ended
    noise: float
    patience: int

    def reason(self, metric: str) -> str:
        return (
            f"search stopped: {self.patience} trials in a row did not beat the best "
            f"{metric} {self.best:.4f} (trial {self.best_trial}) by more than the noise "
            f"(±{self.noise:.4f}, the validation set's standard error); "
            f"search.stop.patience={self.patience}"
        )


def patience_stop(
    scores: Iterable[float], patience: int, examples: int, metric: str
) -> Stop | None:
    """Where a sequence of trial scores (in the order they ended) stops, or None."""
    best: float | None = None
    best_at, since, seen = 0, 0, 0
    for score in scores:
        seen += 1
        if best is None:
            best, best_at, since = score, seen, 0
            continue
        gain = (best - score) if minimised(metric) else (score - best)
        if gain > noise(best, examples):
            best, best_at, since = score, seen, 0
        else:
            since += 1
            if (minimised(metric) and score < best) or (not minimised(metric) and score > best):
                best, best_at = score, seen  # a better score within the noise: no reset
        if since >= patience:
            return Stop(seen, best, best_at, noise(best, examples), patience)
    return None


def saved_stop_reason(project_dir: Path) -> str | None:
    """Why the oracle whose state is in `project_dir` (keras-tuner's folder of one search)
    stopped the search, as it said it; None when it did not."""
    path = Path(project_dir) / "oracle.json"
    try:
        base = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return replay(base, path)[0].get(STOP_REASON)
