"""Shared fixtures: the real config composed in-process, throwaway tracking stores, the CLI.

TensorFlow start-up noise is silenced before any test imports it. Tests that are not
about the command line call the library in-process (`run_search(cfg)`); a few drive
the CLI as a process of its own for exit codes, signals and kill -9, forked from a
preloaded interpreter (tests/forked_cli.py) unless they ask for a fresh one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.forked_cli import popen_python, run_python

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Trial artifacts inline (the same job code, no worker process: its ~3 s of imports per
# search add minutes to the suite); tests of the worker ask for it with
# tracking.background_artifacts=true (BACKGROUND).
os.environ.setdefault("ATTENTION_SEARCH_BACKGROUND_ARTIFACTS", "false")
BACKGROUND = "tracking.background_artifacts=true"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AIRLINE_CSV = PROJECT_ROOT.parent / "shared" / "data" / "airline_tweets.csv"
EXPERIMENT = "attention-search"

needs_airline = pytest.mark.skipif(
    not AIRLINE_CSV.exists(),
    reason=f"shared dataset absent: {AIRLINE_CSV} (see ../shared/data/README.md)",
)


def migrated_sqlite(db: Path) -> Path:
    """`db` made an empty SQLite store with MLflow's schema, copied from one migrated once
    per test process (the migration costs seconds); an existing `db` is left alone."""
    global _MIGRATED
    if not db.exists():
        if _MIGRATED is None:
            import atexit
            import tempfile

            from mlflow.tracking import MlflowClient

            folder = tempfile.mkdtemp(prefix="store-template-")
            atexit.register(shutil.rmtree, folder, True)  # the process's own, gone with it
            _MIGRATED = Path(folder) / "mlflow.db"
            MlflowClient(tracking_uri=f"sqlite:///{_MIGRATED}").search_experiments()
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_MIGRATED, db)
    return db


_MIGRATED: Path | None = None


def store_overrides(tmp_path) -> list[str]:
    """Overrides that keep everything a CLI run writes inside `tmp_path` (its store already
    migrated)."""
    migrated_sqlite(Path(tmp_path) / "mlflow.db")
    return [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
        f"tuner.directory={tmp_path}/tuner",
        f"hydra.run.dir={tmp_path}/hydra",
    ]


@dataclass
class Store:
    """A SQLite tracking store (and tuner folder) inside one test's tmp_path."""

    path: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.path}/mlflow.db"

    @property
    def overrides(self) -> list[str]:
        """For the CLI (`hydra.run.dir` included)."""
        return store_overrides(self.path)

    def compose(self, *overrides: str):
        """The real conf/ plus `overrides`, writing into this store, checked as the command
        checks it (for in-process runs: `run_search` takes a checked config)."""
        from pipeline.config import compose_config
        from pipeline.runtime.checks import validate_config

        own = [o for o in self.overrides if not o.startswith("hydra.")]
        cfg = compose_config([*overrides, *own])
        validate_config(cfg)
        return cfg

    def tracker(self):
        """The store opened as a command opens it (`open_tracker`)."""
        from pipeline.tracking import open_tracker

        return open_tracker(self.compose().tracking)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self) -> list:
        """Every run of the experiment, read with MLflow's own client."""
        client = self.client()
        exp = client.get_experiment_by_name(EXPERIMENT)
        return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def postgres():
    """One private PostgreSQL cluster per test module (and xdist worker); its password
    reaches every client and server through PGPASSWORD, as README "Team set-up" says."""
    from pipeline.tracking.mlflow_server import free_port
    from pipeline.tracking.postgres import missing_reason, throwaway_postgres

    reason = missing_reason()
    if reason:
        pytest.skip(f"no PostgreSQL: {reason}")
    with throwaway_postgres(free_port(), durable=False) as pg:
        saved = os.environ.get("PGPASSWORD")
        os.environ.update(pg.env)
        try:
            yield pg
        finally:
            if saved is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = saved


@pytest.fixture
def registry_restored():
    """The registries are process-wide (pooling variants, loaders, plugin config sections):
    what a test's plugins register is gone after it, and the plugin modules are imported
    afresh by the next config naming them (an xdist worker runs many test modules)."""
    from pipeline.config.sections import PLUGIN_SECTIONS, register_configs
    from pipeline.data.loaders import LOADERS
    from pipeline.models.registry import POOLINGS

    saved = [(POOLINGS, dict(POOLINGS)), (LOADERS, dict(LOADERS))]
    sections = {group: dict(own) for group, own in PLUGIN_SECTIONS.items()}
    modules = set(sys.modules)
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)
    for group, own in sections.items():
        PLUGIN_SECTIONS[group].clear()
        PLUGIN_SECTIONS[group].update(own)
    for name in set(sys.modules) - modules:
        if name.startswith("tests.plugins."):
            del sys.modules[name]
    register_configs([])


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty SQLite store with MLflow's schema already migrated: each test copies it
    instead of paying the migration (seconds) again."""
    return migrated_sqlite(tmp_path_factory.mktemp("store-template") / "mlflow.db")


@pytest.fixture
def store(tmp_path, store_template) -> Store:
    shutil.copy(store_template, tmp_path / "mlflow.db")
    return Store(tmp_path)


@pytest.fixture
def run_cli(tmp_path):
    """Run `python -m pipeline.<module>` as a process from the project root (forked from
    the preloaded interpreter; `fresh=True` starts a new one, as a user's shell does)."""

    def run(module: str, *args: str, timeout: int = 600, env: dict | None = None, fresh=False):
        full_env = {**os.environ, **(env or {})}
        return run_python(
            ["-m", f"pipeline.{module}", *args],
            fresh=fresh,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run


def start_server_cli(tmp_path, port: int, workers: int = 1, **popen_kwargs) -> subprocess.Popen:
    """`python -m pipeline.server` on 127.0.0.1:`port` over a store inside `tmp_path`."""
    popen_kwargs.setdefault("stdout", subprocess.DEVNULL)
    popen_kwargs.setdefault("stderr", subprocess.DEVNULL)
    return popen_python(
        [
            "-m",
            "pipeline.server",
            "--port",
            str(port),
            "--workers",
            str(workers),
            f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db",
            f"tracking.artifact_root={tmp_path}/artifacts",
        ],
        cwd=PROJECT_ROOT,
        **popen_kwargs,
    )


def start_search_cli(*overrides: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m pipeline.search` in a subprocess; stdout and stderr merged, as a user
    watching the terminal sees them."""
    return popen_python(
        ["-m", "pipeline.search", *overrides],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def search_command_in_process(*overrides: str) -> int:
    """What `python -m pipeline.search` does with these overrides, in this process: the
    same compose (one line for what Hydra refuses), checks and `guarded` exit codes. For
    tests about what the command does, not about its process (each such test costs the
    ~8 CPU-seconds a new interpreter spends importing TensorFlow and MLflow)."""
    from pipeline.runtime.cli import composed_or_fail, guarded
    from pipeline.search.__main__ import run as run_search_command

    own = [o for o in overrides if not o.startswith("hydra.")]  # steer Hydra's run dir only
    try:
        cfg = composed_or_fail(own)
        return guarded(lambda: run_search_command(cfg))
    except SystemExit as err:
        return int(err.code)


def run_searches_together(
    overrides: list[list[str]], envs: list[dict] | None = None, timeout: int = 600
) -> list[str]:
    """Start one search per override list at the same moment; all must exit 0. Their
    outputs, in order."""
    procs = [
        start_search_cli(*own, env=envs[i] if envs else None) for i, own in enumerate(overrides)
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    return outputs


def assert_nothing_running(runs) -> None:
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


_frozen_modules = 0


@pytest.fixture(autouse=True)
def _frozen_imports():
    """What the CLI does for a search (`pipeline.runtime.cli.frozen_heap`), for the in-process
    tests: the modules imported so far (TensorFlow, MLflow: ~500k objects) are frozen, so
    each trial's clear_session() collection, and Python's own, stop re-scanning them
    (0.3-1 s per collection in a worker). Re-frozen only when new modules were imported."""
    import gc

    global _frozen_modules
    if len(sys.modules) > _frozen_modules + 20:
        gc.collect()
        gc.freeze()
        _frozen_modules = len(sys.modules)
    yield
