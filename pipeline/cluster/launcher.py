"""`cluster=workers`: a keras-tuner chief plus N worker processes on this machine.

The launcher is an executor of the search's one lifecycle (`pipeline.search.run`, which
opens the parent run before and summarises the children from MLflow after): in the
command's own process it writes the resolved config for its children, starts the chief
(keras-tuner's oracle over gRPC: `KERASTUNER_ORACLE_IP/PORT`, `KERASTUNER_TUNER_ID=chief`)
and the workers (`KERASTUNER_TUNER_ID=worker-N`, a thread budget each), streams their
output with a prefix and restarts a worker that dies (keras-tuner hands the same id back
its unfinished trial). What each of them runs is `pipeline.search.roles`. No home-made
scheduler: trial assignment is keras-tuner's, storage is MLflow's.

Re-running a cluster search by name resumes it like a local one: the same parent run, the
chief reloads keras-tuner's oracle from `tuner.directory` (finished trials are not re-run,
interrupted ones run once more) and the runs the dead processes left RUNNING are closed
FAILED + `interrupted` first. The chief and workers die with the launcher (a SIGKILLed
launcher leaves no orphan training on).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import progress
from pipeline.cluster import start_role_zygote, thread_budget
from pipeline.config import ClusterRole, TunerKind
from pipeline.errors import SearchError
from pipeline.runtime.processes import (
    CPU_ENV,
    free_port,
    loopback,
    own_group_dying_with_parent,
)
from pipeline.runtime.redaction import without_password
from pipeline.runtime.zygote import ForkedProcess, Zygote
from pipeline.tracking.protocol import TrackingStore

STOP_GRACE_SECONDS = 20
RACER = "racer-"  # the label prefix of a race's processes


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until the chief's gRPC port accepts connections (it imports TensorFlow first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SearchError(f"cluster: the chief exited (code {proc.returncode}) before serving")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise SearchError(f"cluster: the chief did not listen on {host}:{port} within {timeout:.0f}s")


def _pump(stream, label: str) -> None:
    for line in iter(stream.readline, ""):
        progress.say(f"[{label}] {line.rstrip()}")
    stream.close()


@dataclass
class Process:
    label: str  # also its KERASTUNER_TUNER_ID
    popen: subprocess.Popen | ForkedProcess
    restarts: int = 0
    pump: threading.Thread | None = None


@dataclass
class Cluster:
    """The chief and the workers of one search, started from one resolved config file."""

    cfg: DictConfig
    job_dir: Path
    parent_run_id: str
    port: int
    processes: dict[str, Process] = field(default_factory=dict)

    resume: bool = False
    zygote: Zygote | None = None  # cluster.fork_roles: roles forked from it

    def command(self, label: str) -> list[str]:
        role = ClusterRole.chief if label == "chief" else ClusterRole.worker
        if label.startswith(RACER):
            role = ClusterRole.racer
        resume = ["cluster.resume=true"] if self.resume and label == "chief" else []
        return [
            sys.executable,
            "-m",
            "pipeline.search",
            "--config-path",
            str(self.job_dir),
            "--config-name",
            "job",
            f"hydra.run.dir={self.job_dir}/hydra/{label}",
            f"cluster.role={role}",
            f"cluster.worker_id={label}",
            f"cluster.parent_run_id={self.parent_run_id}",
            *resume,
        ]

    def environment(self, label: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            URI_ENV: str(self.cfg.tracking.uri),  # not in job.yaml: it may hold a password
        }
        if not label.startswith(RACER):  # a racer has no oracle to reach: the chief is gone
            env["KERASTUNER_ORACLE_IP"] = self.cfg.cluster.oracle_host
            env["KERASTUNER_ORACLE_PORT"] = str(self.port)
            env["KERASTUNER_TUNER_ID"] = label
        threads = self.cfg.cluster.threads_per_worker
        index = label.removeprefix("worker-").removeprefix(RACER)
        if self.cfg.cluster.pin_cpus and index.isdigit() and hasattr(os, "sched_setaffinity"):
            env[CPU_ENV] = str((int(index) - 1) % (os.cpu_count() or 1))
        if threads and label != "chief":
            env.update(thread_budget(threads))
        return env

    def spawn(self, label: str) -> subprocess.Popen | ForkedProcess:
        """The role's process, in a session of its own (Ctrl-C reaches the launcher, which
        stops them in order) and SIGTERMed when the launcher dies, even by SIGKILL (a forked
        role: when the zygote dies, which dies with the launcher)."""
        command, env = self.command(label), self.environment(label)
        if self.zygote is not None:
            _python, _dash_m, module, *args = command
            try:
                return ForkedProcess(
                    self.zygote,
                    module,
                    args,
                    cwd=os.getcwd(),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                    die_with_parent=True,
                )
            except (OSError, RuntimeError) as err:
                progress.say(
                    f"cluster: the role zygote failed ({err}); starting roles as new "
                    "interpreters (cluster.fork_roles)"
                )
                self.zygote.close()
                self.zygote = None
        return subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=own_group_dying_with_parent,
        )

    def start(self, label: str, restarts: int = 0) -> Process:
        popen = self.spawn(label)
        proc = Process(label, popen, restarts)
        proc.pump = threading.Thread(target=_pump, args=(popen.stdout, label), daemon=True)
        proc.pump.start()
        self.processes[label] = proc
        progress.say(f"cluster: started {label} (pid {popen.pid})")
        return proc

    def stop_all(self) -> None:
        """SIGTERM (runs end KILLED), then SIGKILL after a grace period: no orphans."""
        live = [p for p in self.processes.values() if p.popen.poll() is None]
        for p in live:
            p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for p in live:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        for p in self.processes.values():
            if p.pump is not None:
                p.pump.join(timeout=5)


# The children's tracking.uri: from their environment, so job.yaml holds no credentials.
URI_ENV = "ATTENTION_SEARCH_TRACKING_URI"


def write_job_config(cfg: DictConfig, job_dir: Path) -> None:
    """The launcher's resolved config, which every child composes as its primary config;
    readable by its owner only. Its tracking.uri is the children's environment's, else the
    URI without its password: a worker on another host signs in with its own variables."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    shared = without_password(str(cfg.tracking.uri)).replace("\\", "\\\\").replace("'", "\\'")
    job.tracking.uri = f"${{oc.env:{URI_ENV},'{shared}'}}"
    path = job_dir / "job.yaml"
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(OmegaConf.to_yaml(job))


def remote_workers_line(cfg: DictConfig, host: str, port: int, command: list[str]) -> str:
    """How to start a worker on another host: the oracle's address as other hosts reach
    it, and the sign-in a store with a password needs there."""
    reach = socket.gethostname() if host in ("0.0.0.0", "::") else host
    line = (
        f"cluster: no local workers; start them on other hosts with KERASTUNER_ORACLE_IP="
        f"{reach} KERASTUNER_ORACLE_PORT={port} KERASTUNER_TUNER_ID=worker-N python "
        + " ".join(command[1:])
        + " (N: a number of each worker's own)"
    )
    if host.startswith("127.") or host == "localhost":
        line += f"; cluster.oracle_host={host} serves this host only, 0.0.0.0 serves others"
    uri = str(cfg.tracking.uri)
    if without_password(uri) != uri:
        line += "; they sign in to the store with its variables (PGPASSWORD, .pgpass, "
        line += "MLFLOW_TRACKING_PASSWORD): job.yaml holds no password"
    return line


def supervise(cluster: Cluster, tracker: TrackingStore) -> None:
    """Until the chief ends: restart dead workers (their trial is handed back to them)."""
    chief = cluster.processes["chief"].popen
    while chief.poll() is None:
        workers = [p.popen for label, p in cluster.processes.items() if label != "chief"]
        if workers and all(w.poll() == 0 for w in workers):
            # Every worker got "stopped" from the oracle: the search is over. keras-tuner's
            # chief would still sleep up to 20 s before noticing; stop it now.
            chief.terminate()
            chief.wait(timeout=STOP_GRACE_SECONDS)
            return
        for label, proc in list(cluster.processes.items()):
            code = proc.popen.poll()
            if label == "chief" or code in (None, 0):
                continue
            restart(cluster, tracker, label, code, "trial run(s)", "to resume its trial")
        time.sleep(0.5)
    if chief.returncode != 0:
        raise SearchError(f"cluster: the chief exited with code {chief.returncode}")
    for proc in cluster.processes.values():  # workers leave once the chief says stop
        try:
            proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass


def restart(
    cluster: Cluster, tracker: TrackingStore, label: str, code: int, runs: str, why: str
) -> None:
    """A role that died: its unfinished runs closed FAILED (`interrupted`), then the role
    started again under its name, up to `cluster.max_restarts` times."""
    proc = cluster.processes[label]
    closed = tracker.close_interrupted(cluster.parent_run_id, worker=label)
    if proc.restarts >= cluster.cfg.cluster.max_restarts:
        raise SearchError(
            f"cluster: {label} died {proc.restarts + 1} times (last exit code {code}); "
            "stopping the search (cluster.max_restarts)"
        )
    progress.say(
        f"cluster: {label} exited with code {code}; {closed} unfinished {runs} marked "
        f"FAILED; restarting it {why}"
    )
    cluster.start(label, restarts=proc.restarts + 1)


def supervise_racers(cluster: Cluster, tracker: TrackingStore) -> None:
    """Until every racer has ended well; one that dies is restarted (it gives its
    assignment back to the queue)."""
    while True:
        running = False
        for label, proc in list(cluster.processes.items()):
            code = proc.popen.poll()
            if code is not None and code != 0:
                restart(cluster, tracker, label, code, "run(s)", "to train its assignment again")
            running = running or code != 0
        if not running:
            return
        time.sleep(0.5)


class ClusterExecutor:
    """The search's trials on a keras-tuner chief and `cluster.n_workers` workers: the
    executor `run_search` drives (`zygote`: the roles' zygote, started by the command
    with `start_role_zygote`, closed here)."""

    def __init__(self, cfg: DictConfig, tracker: TrackingStore, zygote: Zygote | None = None):
        if zygote is None:  # a new interpreter: forking this process now is not safe
            zygote = start_role_zygote(cfg, fork=False)
        self.cfg, self.tracker, self.zygote = cfg, tracker, zygote
        self.host = str(cfg.cluster.oracle_host)
        self.port = 0
        self.job_dir = Path()
        self.parent_id = ""

    def prepare(self, plan) -> None:
        """Beside the tuner's project folder, which the chief recreates (overwrite) at
        start; a resume needs keras-tuner's state where the search started."""
        directory = Path(self.cfg.tuner.directory).resolve()
        self.job_dir = directory / f"{plan.name}.cluster"
        oracle_state = directory / plan.name / "oracle.json"
        if plan.resuming and not oracle_state.exists():
            raise SearchError(
                f"cluster: cannot resume '{plan.name}': keras-tuner's state {oracle_state} is "
                "missing (another tuner.directory or host?); run it where it started, or "
                "add search.force_new=true to start it again"
            )

    def describe(self, parent_id: str) -> list[str]:
        cfg, host = self.cfg, self.host
        self.port = cfg.cluster.oracle_port or free_port(host)
        lines = [
            f"cluster: chief on {host}:{self.port}, {cfg.cluster.n_workers} worker(s) x "
            f"{cfg.cluster.threads_per_worker or 'all'} thread(s)"
        ]
        if not loopback(host):
            lines.append(
                f"warning: cluster.oracle_host={host}: keras-tuner's oracle has no "
                "authentication; anyone who reaches that port can read and steer this search"
            )
        if cfg.tuner.kind == TunerKind.grid and cfg.cluster.n_workers > 1:
            lines.append(
                "note: keras-tuner's grid oracle derives each next grid point from a finished "
                "trial, so grid workers mostly take turns; tuner=random or bayesian scale"
            )
        return lines

    def run(self, parent_id: str, plan) -> None:
        """Start the chief and the workers, supervise them until the chief ends; their runs
        are in the store (None: `run_search` reads them there)."""
        cfg, host, port = self.cfg, self.host, self.port
        self.parent_id = parent_id
        write_job_config(cfg, self.job_dir)
        cluster = Cluster(
            cfg, self.job_dir, parent_id, port, resume=plan.resuming, zygote=self.zygote
        )
        try:
            cluster.start("chief")
            # Workers import TensorFlow while the chief does: keras-tuner's oracle client
            # waits for the chief's port (`wait_for_ready`), so nothing starts serialised.
            for i in range(1, cfg.cluster.n_workers + 1):
                cluster.start(f"worker-{i}")
            wait_for_port(host, port, cluster.processes["chief"].popen, timeout=180)
            if cfg.cluster.n_workers == 0:
                progress.say(remote_workers_line(cfg, host, port, cluster.command("worker-N")))
            supervise(cluster, self.tracker)
        finally:
            self.zygote = cluster.zygote  # None once it failed
            cluster.stop_all()
            self.tracker.close_interrupted(parent_id)
        return None

    def run_racers(self, count: int) -> None:
        """`count` racer processes on the race's queue (the job folder's config), until
        each has ended: they stop when the queue has no open assignment."""
        cluster = Cluster(self.cfg, self.job_dir, self.parent_id, self.port, zygote=self.zygote)
        try:
            for i in range(1, count + 1):
                cluster.start(f"{RACER}{i}")
            supervise_racers(cluster, self.tracker)
        finally:
            self.zygote = cluster.zygote
            cluster.stop_all()
            self.tracker.close_interrupted(self.parent_id)

    def rows_so_far(self) -> list[dict]:
        return []  # the store holds the trial runs

    def settle(self) -> None:
        pass  # every role uploaded its own artifacts before it ended

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
