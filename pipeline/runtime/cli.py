"""The process edge shared by every command: config in, exit codes out.

One place for how a command fails (one line on stderr; exit 2 for bad input, 1 for
anything unexpected, 130 on Ctrl-C, 143 on SIGTERM), for the process-wide switches
(quiet TensorFlow/absl start-up, SIGTERM as Ctrl-C, CPU pinning of cluster workers,
a frozen heap during a search), and for composing and checking the config. Library
code never exits or installs handlers; it raises. No heavy imports at module level.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from omegaconf import DictConfig

NOISY_LOGGERS = (
    "tensorflow",
    "absl",
    "mlflow",
    "alembic",
    "h5py",
    "matplotlib",
    "urllib3",
    "gensim",
)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def composed_or_fail(overrides: list[str]) -> DictConfig:
    """The real `conf/` plus `key=value` overrides; an override Hydra or the schema
    refuses (an unknown key, a value outside an enumeration) fails in one line, exit 2,
    naming the allowed values, instead of Hydra's multi-line message and exit 1."""
    from pipeline.config import compose_config
    from pipeline.errors import one_line

    bare = next((o for o in overrides if "=" not in o and not o.startswith("~")), None)
    if bare is not None:  # Hydra's own words: "Error parsing override 'x'"
        fail(f"config: {bare!r} is not an override: an override is key=value "
             f"(search.name={bare} names a search)")  # fmt: skip
    try:
        return compose_config(overrides)
    except Exception as err:  # Hydra's override/composition errors
        line = absent_section(overrides) or closest_fix(err, overrides)
        if line:
            fail(line)
        cause = f": {one_line(err.__cause__)}" if err.__cause__ is not None else ""
        fail(f"config: {one_line(err)}{cause}")
        raise  # unreachable: fail exits


def closest_fix(err: Exception, overrides: list[str]) -> str | None:
    """A group option or a key that does not exist (`data=airline`, `train.epocs=3`) as one
    line with the closest existing name; None for other failures."""
    import difflib

    from omegaconf import OmegaConf

    from pipeline.config import compose_config

    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", "")
    if options and missing:
        group, _, name = missing.rpartition("/")
        typed = next((o for o in overrides if o.lstrip("+").startswith(f"{group}=")), "")
        group = typed[: len(typed) - len(typed.lstrip("+"))] + group  # as typed: +experiment
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"config: {group}={name}: no such option; {hint}known: {', '.join(options)}"
    key = str(getattr(err.__cause__, "full_key", None) or "")
    if not key or "Key '" not in str(err.__cause__):
        return None
    others = [o for o in overrides if not f"{o.split('=')[0].lstrip('+~')}.".startswith(f"{key}.")]
    parent, _, name = key.rpartition(".")
    try:  # the section as it is without the refused override, for the names it knows
        cfg = compose_config(others)
        known = list((OmegaConf.select(cfg, parent) if parent else cfg).keys())
    except Exception:
        return None
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    hint = f"; did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
    return f"config: {key}: no such key in the config schema{hint}"


def absent_section(overrides: list[str]) -> str | None:
    """An override into a section the chosen group leaves empty (`data.csv.path=...` with
    `data=synthetic`) as one line naming the group to choose; None for other failures."""
    from omegaconf import OmegaConf

    from pipeline.config import compose_config
    from pipeline.config.schema import CONF_DIR

    for at, override in enumerate(overrides):
        key = override.split("=", 1)[0]
        if "=" not in override or key[:1] in "+~" or key.count(".") < 2:
            continue
        section, group = key.rsplit(".", 1)[0], key.split(".", 1)[0]
        try:
            rest = compose_config(overrides[:at] + overrides[at + 1 :])
        except Exception:
            continue
        if OmegaConf.select(rest, section, default="absent") is None:
            chosen = OmegaConf.select(rest, f"{group}.loader") or OmegaConf.select(
                rest, f"{group}.name"
            )
            name = section.split(".", 1)[1]
            hint = (
                f"; choose it first ({group}={name})"
                if (CONF_DIR / group / f"{name}.yaml").is_file()
                else ""
            )
            return f"{key}: {section} is not part of this config ({group} is {chosen}){hint}"
    return None


def composed(overrides: list[str]) -> DictConfig:
    """The real `conf/` plus `key=value` overrides, checked; bad ones fail in one line."""
    cfg = composed_or_fail(overrides)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """The whole config check (plugins, ranges, pooling registry); one line, exit 2."""
    from pipeline.config import ConfigError
    from pipeline.runtime.checks import validate_config

    try:
        validate_config(cfg)
    except ConfigError as err:
        fail(str(err))


def exit_without_teardown(main: Callable[[], object]) -> None:
    """Run a command's `main` and exit with its code (what it returns, or raises with
    SystemExit) as the interpreter would (threads joined, atexit handlers run, output
    flushed), minus the teardown of every module it imported: with TensorFlow,
    keras-tuner and MLflow loaded that took ~2 s after the last line (the zygote's
    children exit the same way)."""
    from pipeline.runtime.zygote_server import run_exit_handlers

    try:
        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            code = err.code or 0
        else:
            print(err.code, file=sys.stderr)
            code = 1
    run_exit_handlers()
    os._exit(code & 0xFF)


def guarded(action: Callable[[], int], verbose: bool = False) -> int:
    """Run `action`; expected errors become one line (exit 2), others one line (exit 1)."""
    from pipeline.errors import UserFacingError, one_line

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


class WritableOutputs:
    """A Hydra callback (`hydra.callbacks` in conf/config.yaml): Hydra creates its output
    folder (under mlruns/ by default) before any of our code runs, so a read-only store
    would end in its traceback; check it first and fail in one line, exit 2."""

    def _check(self, folder: str, key: str) -> None:
        from pathlib import Path

        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"{key}: cannot write to {folder} ({err.strerror})")

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(str(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """Hydra has just written the job's config and overrides under `.hydra/`: a
        password given in an override (`tracking.uri=postgresql://u:PW@...`) is hidden."""
        from pathlib import Path

        from pipeline.runtime.redaction import redact

        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        for path in (Path(config.hydra.runtime.output_dir) / subdir).glob("*.yaml"):
            text = path.read_text()
            if (hidden := redact(text)) != text:
                path.write_text(hidden)

    def __getattr__(self, name: str):  # the other callback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


# ---------------------------------------------------------------- signals and the heap


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: runs end KILLED, keras-tuner state stays resumable."""


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_signals() -> None:
    """SIGTERM raises `Terminated` and SIGINT `KeyboardInterrupt` (the tracker marks the
    runs KILLED). Python leaves SIGINT ignored when it started ignored (e.g. launched with
    `&` from a script); a search documents kill -INT as "stop", so install it explicitly."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt_code(err: KeyboardInterrupt) -> int:
    return 143 if isinstance(err, Terminated) else 130


def collect_after_startup() -> None:
    """Python's cyclic collector off until `frozen_heap` turns it back on: a search's
    start-up imports (TensorFlow, MLflow, SciPy) build ~1M long-lived objects, which its
    automatic full collections re-scan again and again as the heap grows (8 of them,
    ~0.9 s here); `frozen_heap` collects once and freezes what survives. Imports leave
    little cyclic garbage, so memory is not the price."""
    gc.disable()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything alive now (TensorFlow, MLflow, the data) lives for the whole search:
    freezing it keeps each trial's clear_session() garbage collection from scanning
    ~700k long-lived objects (0.3 s per trial on a 2-core VM, down to ~0.02 s).
    Unfrozen when the block ends, so the process collects them normally again. A heap the
    caller froze already (the test session, a zygote's child) is left as it froze it.
    The collector is on inside (also after `collect_after_startup`)."""
    frozen_here = not gc.get_freeze_count()
    if frozen_here:
        gc.collect()
        gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        if frozen_here:
            gc.unfreeze()


def pin_to_cpu_from_env() -> None:
    """First thing a cluster worker does, before TensorFlow starts threads (they inherit
    the affinity): run on the one CPU the launcher gave it."""
    from pipeline.runtime.processes import CPU_ENV

    cpu = os.environ.get(CPU_ENV)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})


# ---------------------------------------------------------------- start-up noise


def quiet(verbose: bool) -> None:
    """Keep TensorFlow/absl/oneDNN start-up noise and library INFO logs off the console.

    Call it before TensorFlow is imported: the C++ log level is read from the
    environment at import time. `search.verbose=true` keeps everything.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow draws tqdm bars on stderr for artifact transfers once tqdm is installed
    # (Optuna brings it); they would bury the one-line errors.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


def import_quietly(verbose: bool, *modules: str) -> None:
    """Import TensorFlow (and `modules`) with C++ start-up logs off the console; absl
    resets its verbosity when TensorFlow loads, so set it again afterwards."""
    import importlib

    with silenced_stderr(not verbose):
        for name in ("tensorflow", *modules):
            importlib.import_module(name)
    if verbose:
        return
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
