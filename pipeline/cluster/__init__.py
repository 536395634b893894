"""Cluster: keras-tuner's chief/worker engine on this machine (or several).

`launcher` starts and supervises the chief and the workers under one parent run (the
executor `pipeline.search.run` drives); each of them runs `pipeline.search.roles`;
`zygote` forks them from one preloaded interpreter. Sits below `pipeline.search`: it
starts processes and knows nothing of trials. This module stays light: the command
imports it before TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from pipeline.runtime.zygote import Zygote

# What every role imports before it trains: the zygote imports them once for all roles.
ROLE_PRELOAD = (
    "tensorflow",
    "keras",
    "keras_tuner",
    "mlflow",
    "mlflow.keras",
    "pipeline.runtime.cli",
    "pipeline.search.run",
    "pipeline.search.roles",
)


def thread_budget(threads: int) -> dict[str, str]:
    """The environment that holds TensorFlow and the BLAS/OpenMP pools to `threads`."""
    names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
    return {var: str(threads) for var in names}


def start_role_zygote(cfg: DictConfig, fork: bool = True) -> Zygote | None:
    """The zygote the launcher forks its chief and workers from (`cluster.fork_roles`;
    None: each role is a new interpreter). `fork`: forked from this process, which the
    command does before it opens the store or starts a thread: what the command imported
    already (Hydra, pandas, the data; TensorFlow too in a forked test CLI) is not imported
    again, and the rest loads there while the command opens the search."""
    if not cfg.cluster.fork_roles:
        return None
    import os

    from pipeline.runtime.zygote import Zygote

    threads = cfg.cluster.threads_per_worker
    return Zygote(
        ROLE_PRELOAD,
        cwd=os.getcwd(),
        # OpenBLAS sizes its pool from the environment: in the zygote, for every worker.
        env={**os.environ, **thread_budget(threads)} if threads else None,
        die_with_parent=True,
        fork=fork,
    )
