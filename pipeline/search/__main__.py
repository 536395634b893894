"""`python -m pipeline.search`: compose the config with Hydra, check it, run the search.

The entry point (nothing imports it). Thin on purpose: it parses, checks once, and calls
one function (`run_search`, with the cluster's executor under `cluster=workers`, or a
cluster role), and owns what
belongs to the process: signals, exit codes, CPU pinning, a frozen heap. Heavy modules
(tensorflow, keras_tuner, mlflow) are imported only after the config is valid, so
`--help`, `--cfg job` and bad overrides answer fast.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from pipeline.config import (
    CONF_DIR,
    ClusterMode,
    ClusterRole,
    hydra_overrides,
    on_schema,
    pin_explicit_knobs,
)
from pipeline.errors import DiskFull, UploadsKept, disk_full, disk_full_line
from pipeline.runtime.cli import fail, guarded

# EX_TEMPFAIL: the environment failed (the tracking server away too long, a full disk,
# uploads kept): the same command, later, goes on where this one stopped
RESUMABLE = 75


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this search (its overrides, plus its name)."""
    from pipeline.runtime.redaction import redact

    overrides = [o for o in hydra_overrides() if not o.startswith("search.")]
    return redact(
        " ".join(["python -m pipeline.search", *overrides, f"search.name={cfg.search.name}"])
    )


def run(cfg: DictConfig) -> int:
    """Check, then search. Expected failures (UserFacingError) reach `guarded`, which
    prints them as one line with exit code 2."""
    from pipeline import progress
    from pipeline.runtime.checks import validate_config
    from pipeline.runtime.cli import frozen_heap, import_quietly, stop_on_signals

    pins = pin_explicit_knobs(cfg, hydra_overrides())  # what the user set is what trains
    validate_config(cfg)
    cfg = on_schema(cfg)  # a cluster role's job file: typed as the launcher's config was
    for pin in pins:
        progress.say(pin.describe())
    if cfg.cluster.role is None and cfg.search.name:  # one live process: before any slow step
        from pipeline.search.ownership import hold

        hold(cfg.tuner.directory, cfg.search.name)
    # Cheap checks first (data, tracking store), so bad input fails before TensorFlow loads.
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.ledger import plan_search_name
    from pipeline.tracking.store import open_tracker

    role = cfg.cluster.role
    data = prepare(typed_data(cfg.data))
    zygote = None  # the cluster roles' zygote: forked now, before any thread or connection
    if role is None and cfg.cluster.mode == ClusterMode.workers:
        from pipeline.cluster import start_role_zygote

        zygote = start_role_zygote(cfg)
    prefit = None
    if role is None:  # fitted while this process opens the store and imports TensorFlow
        from pipeline.search.references import ReferencePrefit

        prefit = ReferencePrefit(cfg, data)
    tracker = open_tracker(cfg.tracking)
    # known up front for the resume hint; the search's lock held from here (not by the
    # processes a cluster launcher started: the launcher holds it for them)
    cfg.search.name = plan_search_name(cfg, tracker, hold=role is None)
    import_quietly(cfg.search.verbose, "pipeline.search.run", "pipeline.search.roles")
    stop_on_signals()
    try:
        with frozen_heap():
            if role is not None:  # a process the cluster launcher started
                from pipeline.search.roles import serve_role

                serve_role(cfg, data, tracker)
                return 0
            from pipeline.search.run import run_search

            executor = None  # keras-tuner's loop in this process
            if cfg.cluster.mode == ClusterMode.workers:
                from pipeline.cluster.launcher import ClusterExecutor

                executor = ClusterExecutor(cfg, tracker, zygote)
            outcome = run_search(cfg, data, tracker, prefit, executor)
    except (Exception, KeyboardInterrupt) as err:
        exit_for(err, cfg)
    from pipeline.search.outcome import summary_lines

    for line in summary_lines(outcome, cfg.tuner.objective, cfg.search.top_k, cfg.tuner.max_trials):
        progress.say(line)
    return 0


def exit_for(err: BaseException, cfg: DictConfig) -> NoReturn:
    """The one line and exit code of a search that stopped: 75 (EX_TEMPFAIL) with the
    resume command when the environment failed, 2 for a store that refused a write, the
    signal's code for an interrupt; anything else goes on up (`guarded`)."""
    role = cfg.cluster.role
    if isinstance(err, DiskFull):
        fail(f"{err}; free some space, then resume with: {resume_command(cfg)}", code=RESUMABLE)
    if isinstance(err, UploadsKept):
        fail(f"{err}; the same command uploads them: {resume_command(cfg)}", code=RESUMABLE)
    from pipeline.tracking.outage import TrackingOutage

    if isinstance(err, TrackingOutage):
        if role is not None:
            fail(f"{cfg.cluster.worker_id}: {err}", code=RESUMABLE)
        fail(
            f"{err}; the search stopped, and the runs left open are closed by the next command "
            f"that reaches the server; resume with: {resume_command(cfg)}",
            code=RESUMABLE,
        )
    if isinstance(err, KeyboardInterrupt):
        interrupted(err, cfg)
    from pipeline.tracking.connection import refused_permission, write_refused

    if disk_full(err):  # outside a trial: keras-tuner's state, the search's own files
        from pipeline.search.tuner import written_folders

        line = disk_full_line(err, written_folders(cfg))
        fail(f"{line}; free some space, then resume with: {resume_command(cfg)}", code=RESUMABLE)
    if not refused_permission(err):
        raise err
    fail(write_refused(str(cfg.tracking.uri), str(cfg.tracking.experiment)))


def interrupted(err: KeyboardInterrupt, cfg: DictConfig) -> NoReturn:
    from pipeline.runtime.cli import interrupt_code

    code, role = interrupt_code(err), cfg.cluster.role
    if role == ClusterRole.chief:  # stopped by its launcher: nothing to report
        sys.exit(code)
    if role is not None:
        fail(f"{cfg.cluster.worker_id}: stopped", code=code)
    if cfg.cluster.mode == ClusterMode.workers:
        fail(
            "interrupted: the chief and workers were stopped and every run marked KILLED "
            f"or FAILED; resume with: {resume_command(cfg)}",
            code=code,
        )
    fail(
        f"interrupted: the current trial and the search run were marked KILLED; "
        f"resume with: {resume_command(cfg)}",
        code=code,
    )


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


HYDRA_FLAGS = {"-m", "--multirun", "-cp", "--config-path", "-cn", "--config-name", "-p"}


def effective_job_config(args: list[str]) -> str | None:
    """`--cfg job [--resolve] [overrides]` answered here, so that it shows the search space
    after pinning (Hydra's own would print the space before it); None: let Hydra answer."""
    flags = [a for a in args if a.startswith("-")]
    if not ({"--cfg", "-c"} & set(flags)) or set(flags) - {"--cfg", "-c", "--resolve"}:
        return None
    at = next(i for i, a in enumerate(args) if a in ("--cfg", "-c"))
    if args[at + 1 : at + 2] != ["job"]:
        return None
    overrides = [a for i, a in enumerate(args) if not a.startswith("-") and i != at + 1]
    from omegaconf import OmegaConf

    from pipeline.runtime.cli import composed_or_fail

    cfg = composed_or_fail(overrides)
    return OmegaConf.to_yaml(cfg, resolve="--resolve" in flags)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    guarded(lambda: run(cfg), verbose=bool(cfg.search.verbose))


if __name__ == "__main__":
    if sys.argv[1:] in (["--help"], ["-h"]):
        print(quick_help())
        sys.exit(0)
    job = effective_job_config(sys.argv[1:])
    if job is not None:
        print(job, end="")
        sys.exit(0)
    from pipeline.runtime.cli import (
        collect_after_startup,
        composed_or_fail,
        exit_without_teardown,
        pin_to_cpu_from_env,
    )

    collect_after_startup()  # back on in frozen_heap, once the imports are done
    # One compose before Hydra's (~0.3 s): an override the schema refuses is one line and
    # exit 2 here, where Hydra's handler would print five lines and exit 1. With Hydra's
    # own flags (-m, ...) Hydra answers as it does.
    if not any(a.startswith("-") for a in sys.argv[1:]):
        composed_or_fail([a for a in sys.argv[1:] if not a.startswith("hydra.")])
    pin_to_cpu_from_env()  # cluster workers only: their CPU, before any thread starts
    exit_without_teardown(main)
