"""`search.seeds`: null, a list of seeds, or `adaptive` (raced where a verdict is
undecided, `search.race`), and what is wrong with them, as `key: why`."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pipeline.config.schema import ClusterMode

ADAPTIVE = "adaptive"


def listed_seeds(cfg: DictConfig) -> list:
    """`search.seeds` as a list (adaptive: the seeds a race may use, 0 .. most-1)."""
    seeds = cfg.search.seeds
    if seeds == ADAPTIVE:
        return list(range(int(cfg.search.race.most)))
    return list(seeds or [])


def race_problem(first: int, most: int, budget: int | None, margin: float, alpha: float):
    """What is wrong with race settings (`search.race.*`); None: nothing."""
    if first < 2:
        return f"search.race.first: needs 2 or more seeds to weigh a pair, got {first}"
    if most < first:
        return f"search.race.most: {most} is below search.race.first ({first})"
    if not margin > 0:
        return f"search.race.margin: must be > 0, got {margin}"
    if not 0 < alpha < 0.5:
        return f"search.race.alpha: must be in (0, 0.5), got {alpha}"
    if budget is not None and budget < 2 * first:
        return (
            f"search.race.budget: {budget} trainings cannot give two configurations {first} seeds"
        )
    return None


def seeds_problem(cfg: DictConfig) -> str | None:
    """search.seeds: null, a list of whole numbers, or adaptive with sound race settings."""
    seeds = cfg.search.seeds
    if seeds != ADAPTIVE:
        whole = OmegaConf.is_list(seeds) and all(isinstance(s, int) for s in seeds)
        if seeds is None or whole:
            return None
        return f"search.seeds: null, a list of whole numbers or adaptive, got {seeds!r}"
    r = cfg.search.race
    if problem := race_problem(r.first, r.most, r.budget, r.margin, r.alpha):
        return problem
    if not 0 <= r.futility < 1:
        return f"search.race.futility: a conditional power in [0, 1), got {r.futility}"
    if r.top_k < 2:
        return f"search.race.top_k: needs 2 or more to race, got {r.top_k}"
    if cfg.cluster.mode == ClusterMode.workers and cfg.cluster.n_workers < 1:
        return (
            "search.seeds: adaptive on a cluster races on the launcher's own racer processes: "
            "cluster.n_workers must be 1 or more"
        )
    if not cfg.tracking.log_predictions:
        return (
            "tracking.log_predictions: search.seeds=adaptive weighs each replicate's logged "
            "validation predictions"
        )
    if cfg.tuner.pruning == "wilcoxon":
        return "tuner.pruning: wilcoxon prunes seeds itself; adaptive seeds are raced instead"
    return None
