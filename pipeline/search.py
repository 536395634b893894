"""`python -m pipeline.search`: compose the config with Hydra, validate, run the search.

Thin on purpose: heavy modules (tensorflow, keras_tuner, mlflow) are imported only
after the config is valid, so `--help`, `--cfg job` and bad overrides answer fast.
"""

from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig

from pipeline.cli import fail, guarded, hydra_overrides
from pipeline.config import CONF_DIR, validate


def print_summary(outcome, cfg: DictConfig) -> None:
    from pipeline import progress
    from pipeline.ledger import per_trial

    objective = cfg.tuner.objective
    trials = outcome.trials
    finished = per_trial(trials)
    n_configs = trials["trial"].nunique()
    ascending = objective == "val_loss"
    top = finished.sort_values(objective, ascending=ascending).head(cfg.search.top_k)
    several = bool(len(top)) and top["seeds"].max() > 1
    hidden = {
        "trial",
        "trial_id",
        "status",
        "run_id",
        "seconds",
        "error",
        "variant",
        "pooling",
        "config_hash",
        "rss_mb",
        "attention_activation",
        "val_accuracy",
        "val_loss",
        "val_macro_f1",
        "seed",
        "seeds",
        "group",
    }
    hp_cols = [
        c for c in trials.columns if c not in hidden and not c.startswith(("tuner/", "attention_"))
    ]
    keys = ["attention_on_keys"] if "attention_on_keys" in top else []
    spread = [f"{objective}_std", "seeds"] if several else []
    wanted = ["trial", objective, *spread, "variant", *hp_cols, *keys, "seconds", "run_id"]
    cols = [c for c in wanted if c in top]
    runs = f", {len(trials)} runs" if several else ""
    progress.say()
    progress.say(
        f"top {len(top)} of {n_configs} trials ({len(finished)} finished, "
        f"{n_configs - len(finished)} failed{runs}) by {objective}"
        + (" (mean over seeds):" if several else ":")
    )
    progress.say(top[cols].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if outcome.exhausted:
        progress.say(
            f"note: the search space was exhausted after {n_configs} trials "
            f"(tuner.max_trials={cfg.tuner.max_trials}); widen search_space for more."
        )
    if outcome.test_metrics:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in outcome.test_metrics.items())
        progress.say(f"best trial {outcome.best['trial']} on the held-out test split: {shown}")
    progress.say(f"parent run: {outcome.parent_run_id}  (search '{outcome.search_id}')")
    progress.say(f"open the UI: {outcome.ui_command}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: runs end KILLED, keras-tuner state stays resumable."""


def _raise_terminated(signum, frame):
    raise Terminated()


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this search (its overrides, plus its name)."""
    overrides = [o for o in hydra_overrides() if not o.startswith("search.")]
    return " ".join(["python -m pipeline.search", *overrides, f"search.name={cfg.search.name}"])


def run(cfg: DictConfig) -> int:
    """Validate, then search. Expected failures (UserFacingError) reach `guarded_run`,
    which prints them as one line with exit code 2."""
    validate(cfg)
    # Cheap checks first (data, tracking store), so bad input fails before TensorFlow loads.
    from pipeline.data import prepare
    from pipeline.ledger import plan_search_name
    from pipeline.quiet import quiet_after_import, silenced_stderr
    from pipeline.tracking import Tracker

    data = prepare(cfg.data)
    tracker = Tracker.from_config(cfg.tracking)
    tracker.connect()
    cfg.search.name = plan_search_name(cfg, tracker)  # known up front for the resume hint
    with silenced_stderr(not cfg.search.verbose):
        import tensorflow  # noqa: F401  (its C++ start-up logs go to the silenced stderr)

        from pipeline.tuning import run_search
    quiet_after_import(cfg.search.verbose)
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Python leaves SIGINT ignored when it started ignored (e.g. launched with `&` from a
    # script); a search documents Ctrl-C/kill -INT as "stop and mark KILLED", so say so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if cfg.cluster.mode == "workers" and cfg.cluster.role is None:
            from pipeline.cluster import launch

            outcome = launch(cfg, data, tracker)
        else:
            outcome = run_search(cfg, data, tracker)
    except KeyboardInterrupt as err:
        code = 143 if isinstance(err, Terminated) else 130
        if cfg.cluster.role == "chief":  # stopped by its launcher: nothing to report
            sys.exit(code)
        if cfg.cluster.role is not None:
            fail(f"{cfg.cluster.worker_id}: stopped", code=code)
        if cfg.cluster.mode == "workers":
            fail(
                "interrupted: the chief and workers were stopped and every run marked KILLED "
                "or FAILED (cluster searches cannot be resumed yet)",
                code=code,
            )
        fail(
            f"interrupted: the current trial and the search run were marked KILLED; "
            f"resume with: {resume_command(cfg)}",
            code=code,
        )
    if outcome is not None:  # a cluster chief/worker: the launcher prints the summary
        print_summary(outcome, cfg)
    return 0


def guarded_run(cfg: DictConfig) -> int:
    """Unexpected errors: one line (the traceback with search.verbose=true), exit 1."""
    return guarded(lambda: run(cfg), verbose=bool(cfg.search.verbose))


def quick_help() -> str:
    """What Hydra's `--help` shows (config groups, composed config), without its cost:
    Hydra deep-copies the config repository once per group listed (~1 s here)."""
    from omegaconf import OmegaConf

    from pipeline.config import compose_config

    groups = []
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:
            groups.append(f"{folder.name}: {', '.join(options)}")
    return "\n".join(
        [
            "python -m pipeline.search [group=option ...] [key=value ...]",
            "(Hydra: --cfg job prints the composed config, --hydra-help Hydra's own options)",
            "",
            "== Configuration groups ==",
            "Compose your configuration from those groups (group=option)",
            "",
            *groups,
            "",
            "== Config ==",
            "Override anything in the config (foo.bar=value)",
            "",
            OmegaConf.to_yaml(compose_config()),
        ]
    )


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    guarded_run(cfg)


if __name__ == "__main__":
    if sys.argv[1:] in (["--help"], ["-h"]):
        print(quick_help())
        sys.exit(0)
    from pipeline.cli import pin_to_cpu_from_env

    pin_to_cpu_from_env()  # cluster workers only: their CPU, before any thread starts
    main()
