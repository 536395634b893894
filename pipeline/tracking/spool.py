"""Artifacts uploaded off the training path, from a spool on disk that survives a kill.

A trial's heatmaps, confusion matrix and model take a second or more to draw and upload,
while the next trial could already be training: a local search keeps one of the two cores
busy. `ArtifactSpool.submit` writes a job -- the files to upload and what to draw from them
-- into a folder of its own with one atomic rename, and returns. A worker process
(`python -m pipeline.tracking.spool FOLDER ...`, on the other core: a thread would share
the interpreter lock with training) draws and uploads the jobs in order and deletes each
one once all of it is in the store.

- Nothing is lost: a job is on disk before `submit` returns. When the search dies, its
  worker still finishes the jobs it was told of (its stdin closes); if the worker dies too
  (kill -9 of both, a lost server), the jobs stay, and the next worker on the folder (the
  resumed search's, a restarted cluster worker's) finishes them first.
- Nothing stays half-written: a figure is drawn under a temporary name and renamed into
  place; an upload cut short is simply done again (MLflow overwrites an artifact's path).
- Runs end as before: a trial's run ends FINISHED (or FAILED) on the main thread; only its
  files arrive later, and `close` (end of the search, Ctrl-C, a stopped cluster worker)
  waits for them before anything reads them (the registry, reports).

Without a folder the spool works inline: `submit` draws and uploads at once, through the
same code (a reproduction, `tracking.background_artifacts=false`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import progress

# (the JSON a figure is drawn from) -> the figure's bytes or text
Renderer = Callable[[Any], bytes | str]
# (run id, local folder, artifact path or None): upload a folder's files to a run
Upload = Callable[[str, str, str | None], None]

JOB_FILE = "job.json"
ERROR_FILE = "error.txt"  # why the last upload of a kept job failed
JOB_NAME = re.compile(r"\d{6,}-\w+")  # `<submission number>-<run id>`: anything else is not ours
URI_ENV = "ATTENTION_SEARCH_SPOOL_URI"  # the worker's tracking URI (may hold a password)
FILES = "files"
LOCK_FILE = ".worker.lock"


@dataclass
class ArtifactJob:
    """What one run gets: files (artifact path -> content, or a file or folder to copy)
    and renders (artifact path of the output -> renderer name and the artifact path of the
    JSON it is drawn from, which is uploaded too)."""

    run_id: str
    files: dict[str, bytes | str | Path] = field(default_factory=dict)
    renders: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add_json(self, artifact_file: str, data: Any) -> None:
        self.files[artifact_file] = json.dumps(data, indent=2)

    def add_render(self, artifact_file: str, renderer: str, source: str) -> None:
        self.renders[artifact_file] = (renderer, source)


@dataclass(frozen=True)
class SpoolTarget:
    """Where the jobs go and how they are drawn: what a worker process is started with."""

    uri: str
    renderers: str  # "module:attribute", a mapping of renderer names (light to import)
    outage_budget_s: float = 0.0
    outage_backoff_max_s: float = 10.0

    def load_renderers(self) -> Mapping[str, Renderer]:
        module, _, attribute = self.renderers.partition(":")
        return getattr(importlib.import_module(module), attribute)


def write_job(job: ArtifactJob, path: Path) -> Path:
    files = path / FILES
    files.mkdir(parents=True)
    for artifact, content in job.files.items():
        target = files / artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path) and content.is_dir():
            shutil.copytree(content, target)
        elif isinstance(content, Path):
            shutil.copy(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    renders = {k: list(v) for k, v in job.renders.items()}
    (path / JOB_FILE).write_text(json.dumps({"run_id": job.run_id, "renders": renders}))
    return path


def process_job(path: Path, upload: Upload, renderers: Mapping[str, Renderer]) -> None:
    """Draw what is missing (atomically), upload everything, then forget the job."""
    spec = json.loads((path / JOB_FILE).read_text())
    files = path / FILES
    for part in files.rglob(".*.part"):  # a drawing cut short before its rename
        part.unlink()
    for artifact, (renderer, source) in spec["renders"].items():
        target = files / artifact
        if target.exists():
            continue
        out = renderers[renderer](json.loads((files / source).read_text()))
        tmp = target.with_name(f".{target.name}.part")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(out, bytes):
            tmp.write_bytes(out)
        else:
            tmp.write_text(out)
        os.replace(tmp, target)
    upload(spec["run_id"], str(files), None)
    shutil.rmtree(path)


def pending_jobs(folder: Path) -> list[Path]:
    """Jobs in submission order (a `.tmp-` folder is a submit cut short: not a job)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if JOB_NAME.fullmatch(p.name) and (p / JOB_FILE).is_file()
    )


class ArtifactSpool:
    """One process's artifact jobs: spooled to `folder` and done by a worker process, or
    (folder None) done inline with `upload`."""

    def __init__(
        self, folder: Path | None, target: SpoolTarget, upload: Upload | None = None
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.target = target
        self.upload = upload
        self._worker: subprocess.Popen | None = None
        self._next = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for cut_short in self.folder.glob(".tmp-*"):  # a submit its process died in
                shutil.rmtree(cut_short, ignore_errors=True)
            left = pending_jobs(self.folder)
            self._next = max((int(p.name.split("-", 1)[0]) for p in left), default=-1) + 1
            if left:
                progress.say(
                    f"artifacts: {len(left)} job(s) a stopped process left in {self.folder} "
                    "are uploaded first"
                )
            self._start()  # now: its imports overlap the first trial, not the last upload

    def submit(self, job: ArtifactJob) -> None:
        """The job on disk (safe from here on), then the worker told; inline without a
        folder."""
        if self.folder is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_job(job, Path(tmp) / "job")
                assert self.upload is not None, "an inline spool needs an upload"
                process_job(path, self.upload, self.target.load_renderers())
            return
        name = f"{self._next:06d}-{job.run_id}"
        self._next += 1
        tmp = write_job(job, self.folder / f".tmp-{name}")
        os.replace(tmp, self.folder / name)
        self._start()
        try:
            assert self._worker is not None and self._worker.stdin is not None
            self._worker.stdin.write(name + "\n")
            self._worker.stdin.flush()
        except (BrokenPipeError, OSError):  # the worker died: the job waits in the spool
            progress.say(f"artifacts: the upload worker stopped; {name} waits in {self.folder}")

    def finish_left(self, folder: Path) -> int:
        """Upload here and now the jobs a stopped process left in `folder` (a resume with
        `background_artifacts=false`, or a search about to be started afresh, which
        would delete them); a job that fails stays in the folder and raises."""
        assert self.upload is not None, "finishing left jobs inline needs an upload"
        left = pending_jobs(folder)
        if left:
            progress.say(f"artifacts: {len(left)} job(s) a stopped process left in {folder}")
            renderers = self.target.load_renderers()
            for path in left:
                process_job(path, self.upload, renderers)
        return len(left)

    def _start(self) -> None:
        if self._worker is not None and self._worker.poll() is None:
            return
        t = self.target
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tracking.spool", str(self.folder),
             "--renderers", t.renderers,
             "--budget", str(t.outage_budget_s), "--backoff", str(t.outage_backoff_max_s)],
            stdin=subprocess.PIPE,
            text=True,
            env={**os.environ, URI_ENV: t.uri},  # not in argv: `ps` shows argv to everyone
        )  # fmt: skip

    def close(self) -> None:
        """Wait until every job is uploaded; say what is left (the next spool does it)."""
        if self.folder is None or self._worker is None:
            return
        worker, self._worker = self._worker, None
        if worker.stdin is not None:
            try:
                worker.stdin.close()
            except OSError:
                pass
        code = worker.wait()
        left = pending_jobs(self.folder)
        if code != 0 or left:
            progress.say(
                f"artifacts: {len(left)} upload job(s) kept in {self.folder} (worker exit "
                f"{code}); the next search or resume on this spool uploads them"
            )


def work(folder: Path, target: SpoolTarget) -> int:
    """The worker: do every job in the folder, then one more round per line on stdin (a
    new job), and a last round at end of input. One worker per folder at a time. Its
    imports (MLflow, matplotlib) run with the cyclic collector off, then what they built
    is frozen: their automatic full collections took ~1.4 CPU-s of the core the search
    trains on."""
    import gc
    import signal

    gc.disable()
    import mlflow
    from filelock import FileLock

    from pipeline.errors import one_line
    from pipeline.tracking import connection
    from pipeline.tracking.outage import OutageGuard, TrackingOutage

    # Ctrl-C reaches the whole process group: the search stops, and closes this worker's
    # input, which then finishes the jobs it has instead of dropping them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mlflow.set_tracking_uri(target.uri)
    guard = OutageGuard(target.uri, target.outage_budget_s, target.outage_backoff_max_s)

    def upload(run_id: str, local: str, artifact_path: str | None) -> None:
        guard.call(connection.client().log_artifacts, run_id, local, artifact_path)

    renderers = target.load_renderers()
    gc.collect()
    gc.freeze()
    gc.enable()
    failed: set[str] = set()

    def round_() -> None:
        guard.reset()  # an outage that outlasted the budget does not end this worker's life
        for path in pending_jobs(folder):
            if path.name in failed:
                continue
            try:
                process_job(path, upload, renderers)
            except Exception as err:  # kept: the next worker on the folder tries again
                if not isinstance(err, TrackingOutage):  # an outage: tried again next round
                    failed.add(path.name)
                print(f"artifacts: {path.name} kept in the spool: {one_line(err)}", flush=True)
                with contextlib.suppress(OSError):  # why, for the search's last line
                    (path / ERROR_FILE).write_text(one_line(err))

    with FileLock(str(folder / LOCK_FILE)):
        round_()
        for _ in sys.stdin:
            round_()
        round_()
    return 1 if pending_jobs(folder) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.spool")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--renderers", required=True)
    parser.add_argument("--budget", type=float, default=0.0)
    parser.add_argument("--backoff", type=float, default=10.0)
    args = parser.parse_args(argv)
    target = SpoolTarget(os.environ[URI_ENV], args.renderers, args.budget, args.backoff)
    return work(args.folder, target)


if __name__ == "__main__":
    sys.exit(main())
