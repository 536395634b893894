"""Keep TensorFlow/absl/oneDNN start-up noise and library INFO logs off the console.

Call `quiet(verbose)` before TensorFlow is imported: the C++ log level is read from
the environment at import time. `search.verbose=true` keeps everything.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

NOISY_LOGGERS = ("tensorflow", "absl", "mlflow", "alembic", "h5py", "matplotlib", "urllib3")


def quiet(verbose: bool) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("keras", "tensorflow", "mlflow", "keras_tuner", "google", "absl"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextmanager
def silenced_stderr(enabled: bool) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL).

    Python exceptions raised inside still propagate and are printed after restoring.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_after_import(verbose: bool) -> None:
    """absl resets its verbosity when TensorFlow loads; set it again afterwards."""
    if verbose:
        return
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
