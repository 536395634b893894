"""PostgreSQL as MLflow's backend store: the team set-up (`tracking=postgres`).

Two things live here. `creation_lock` is a PostgreSQL advisory lock held while a process
creates or migrates MLflow's schema, so searches and servers opened at the same moment on
a fresh database do not race in alembic (the SQLite store has a file lock for the same
reason, `sqlite_store`). `throwaway_postgres` runs a real, private PostgreSQL cluster
(`initdb` in a temporary folder, `pg_ctl` on a free loopback port, password auth) for the
tests and `python -m pipeline.bench scaling`: the same server a team runs, not a mock.

Credentials never appear in a URI this project builds: libpq reads the password from
`PGPASSWORD` or a `.pgpass` file (`PGPASSFILE`), and `redact` hides one typed into a URI.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserFacingError

SCHEMES = ("postgresql", "postgres")  # with or without a driver: postgresql+psycopg://
# Any fixed 64-bit key: every opener of an MLflow store on this database waits on it.
MIGRATION_LOCK_KEY = 0x6D6C666C6F77  # "mlflow"
LOCK_TIMEOUT_S = 300


class PostgresError(UserFacingError, RuntimeError):
    """PostgreSQL cannot be used as configured; the message says why."""


def is_postgres(uri: str) -> bool:
    """A PostgreSQL store URI, whichever SQLAlchemy driver it names (`postgresql://`,
    `postgresql+psycopg://`, `postgresql+psycopg2://`, `postgres://`)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.split("+", 1)[0].lower() in SCHEMES


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold a session advisory lock on the store's database while the caller opens
    (creates, migrates) MLflow's schema there; a no-op for any other store."""
    if not is_postgres(uri):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'"))
            conn.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                conn.commit()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- a throwaway cluster
def binaries() -> Path | None:
    """The folder of `initdb`/`pg_ctl`: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def missing_reason() -> str | None:
    """Why a throwaway cluster cannot start here, or None when it can."""
    if binaries() is None:
        return (
            "PostgreSQL server binaries not found (Debian package postgresql; `make test` "
            "installs it when run as root with apt-get)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as"
    return None


@dataclass(frozen=True)
class Postgres:
    """A running throwaway cluster: connect with `uri` and `PGPASSWORD=password`."""

    host: str
    port: int
    user: str
    password: str
    database: str
    folder: Path
    options: str  # the server's own (`pg_ctl -o`): port, socket folder, fsync

    @property
    def uri(self) -> str:
        """Without the password: libpq takes it from PGPASSWORD or a .pgpass file."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions cut), as a database outage would."""
        _run_as_owner([str(binaries() / "pg_ctl"), "-D", str(self.folder / "data")]
                      + ["-m", "fast", "-w", "stop"])  # fmt: skip

    def start(self) -> None:
        """Start it again with the options it was created with."""
        _run_as_owner(
            [str(binaries() / "pg_ctl"), "-D", str(self.folder / "data"), "-o", self.options]
            + ["-l", str(self.folder / "server.log"), "-w", "-t", "60", "start"]
        )

    def create_database(self, name: str) -> str:
        """A fresh database on this cluster; its URI (same user, no password)."""
        _run_as_owner(
            [str(binaries() / "createdb"), "-h", self.host, "-p", str(self.port)]
            + ["-U", self.user, name],
            extra_env=self.env,
        )
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"


def _owner() -> str | None:
    """initdb and the server refuse to run as root: run them as Debian's postgres user."""
    return "postgres" if os.geteuid() == 0 else None


def _run_as_owner(command: list[str], extra_env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command,
        user=_owner(),
        env={**os.environ, **(extra_env or {})},
        capture_output=True,
        text=True,
        cwd="/",
    )
    if result.returncode != 0:
        raise PostgresError(
            f"{Path(command[0]).name} failed (exit {result.returncode}): "
            + (result.stderr or result.stdout).strip().splitlines()[-1]
        )


@contextmanager
def throwaway_postgres(
    port: int, user: str = "mlflow", database: str = "mlflow", durable: bool = True
):
    """A private PostgreSQL cluster on 127.0.0.1:`port` with password (scram) auth over
    TCP and one database; stopped (`pg_ctl stop -m immediate`) and deleted after.
    `durable=False` turns fsync off (tests); benchmarks keep PostgreSQL's defaults."""
    reason = missing_reason()
    if reason:
        raise PostgresError(reason)
    bin_dir = binaries()
    # Not under pytest's root-only tmp folders: the postgres user must reach it.
    folder = Path(tempfile.mkdtemp(prefix="attention-search-pg-"))
    owner = _owner()
    if owner:
        shutil.chown(folder, user=owner, group=owner)
    password = secrets.token_urlsafe(16)
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if owner:
        shutil.chown(pwfile, user=owner, group=owner)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    if not durable:
        options += " -c fsync=off"
    pg = Postgres("127.0.0.1", port, user, password, database, folder, options)
    started = False
    try:
        _run_as_owner(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}"]
            + ["--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"]
        )
        pwfile.unlink()
        pg.start()
        started = True
        pg.create_database(database)
        yield pg
    finally:
        if started:
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                user=owner,
                capture_output=True,
                cwd="/",
            )
        shutil.rmtree(folder, ignore_errors=True)
