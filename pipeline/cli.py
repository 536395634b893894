"""Shared command-line plumbing for the tools besides the search (report, reproduce).

One place for how a command fails: one line on stderr and an exit code (2 for bad
input, 1 for anything unexpected, 130 on Ctrl-C). No heavy imports here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import DictConfig

CPU_ENV = "PIPELINE_WORKER_CPU"  # set by the cluster launcher for each worker


def pin_to_cpu_from_env() -> None:
    """First thing a cluster worker does, before TensorFlow starts threads (they inherit
    the affinity): run on the one CPU the launcher gave it."""
    import os

    cpu = os.environ.get(CPU_ENV)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def hydra_overrides() -> list[str]:
    """The command-line overrides of the running Hydra app ([] outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside @hydra.main (tests, tools)
        return []


def composed(overrides: list[str]) -> DictConfig:
    """The real `conf/` plus `key=value` overrides, validated; bad ones fail in one line."""
    from pipeline.config import ConfigError, compose_config, validate
    from pipeline.errors import one_line

    try:
        cfg = compose_config(overrides)
        validate(cfg)
    except ConfigError as err:
        fail(str(err))
    except Exception as err:  # Hydra's override/composition errors
        fail(f"config: {one_line(err)}")
    return cfg


def guarded(action: Callable[[], int], verbose: bool = False) -> int:
    """Run `action`; expected errors become one line (exit 2), others one line (exit 1)."""
    from pipeline.errors import UserFacingError, one_line
    from pipeline.quiet import quiet

    quiet(verbose)
    try:
        return action()
    except UserFacingError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as err:
        if verbose:
            raise
        fail(
            f"unexpected {type(err).__name__}: {one_line(err)} "
            "(search.verbose=true shows the traceback)",
            code=1,
        )
    return 1
