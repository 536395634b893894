"""Runs that always end with a status, and what is logged on the active run while it is
open: the run-lifecycle part of `Tracker`.

Every run opened here ends FINISHED, FAILED (an exception, with the error as a tag) or
KILLED (Ctrl-C); runs a dead process left RUNNING are closed by the next opener
(interrupted children, stale runs without a heartbeat). Against a server, metrics are
queued and replayed in order, so training goes on through an outage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import mlflow

from pipeline.errors import one_line
from pipeline.runtime.redaction import redact
from pipeline.tracking import connection
from pipeline.tracking.readers import float_tag, int_tag
from pipeline.tracking.schema import Status, Tag

MAX_PARAM_CHARS = 6000


class RunLifecycle:
    """Open, log on, and close runs (state: `parent_run_id`, `heartbeat`, `stale_after_s`,
    `system_metrics_s`, the metric queue and the system-metrics monitors; set by
    `Tracker`)."""

    @contextmanager
    def run(
        self,
        name: str,
        tags: Mapping[str, Any] | None = None,
        nested: bool = False,
        run_id: str | None = None,
        system_metrics: bool = False,
    ) -> Iterator[mlflow.ActiveRun]:
        """A run that always ends with a status: FINISHED, FAILED (+error tag) or KILLED.

        With `run_id`, an existing run is reopened (a resumed search's parent). With
        `system_metrics`, MLflow samples CPU and memory every `system_metrics_s` seconds
        (its "System metrics" tab; a run shorter than that gets none).
        """
        sample = system_metrics and self.system_metrics_s > 0
        remote_parent = nested and mlflow.active_run() is None and self.parent_run_id
        tags = {k: redact(v) for k, v in (tags or {}).items()}
        tags[Tag.HEARTBEAT] = str(int(time.time()))
        if self.stale_after_s > 0:  # readers judge this run by its writer's patience
            tags[Tag.STALE_AFTER] = f"{self.stale_after_s:g}"
        active = self._call(
            mlflow.start_run,
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=self.experiment_id,
            nested=nested,
            parent_run_id=self.parent_run_id if remote_parent else None,
            tags=tags,
            log_system_metrics=False,  # started after the run's first metrics: see below
        )
        stale_error = run_id is not None and Tag.ERROR in (active.data.tags or {})
        run_id = active.info.run_id
        self.heartbeat.watch(run_id)
        if sample:
            self._monitors_wanted.add(run_id)
        try:
            yield active
        except KeyboardInterrupt:
            self._end(run_id, Status.KILLED, {Tag.STATUS: "killed", Tag.INTERRUPTED: "true"})
            raise
        except BaseException as err:
            error = redact(f"{type(err).__name__}: {one_line(err)}")
            self._end(run_id, Status.FAILED, {Tag.STATUS: "failed", Tag.ERROR: error})
            raise
        else:
            if stale_error:  # an earlier process's failure, which this one has mended
                self._call(connection.client().delete_tag, run_id, Tag.ERROR)
            self._end(run_id, Status.FINISHED, {Tag.STATUS: "finished"})
        finally:
            self.heartbeat.forget(run_id)
            self._monitors_wanted.discard(run_id)

    def _end(self, run_id: str, status: str, tags: dict[str, str]) -> None:
        """Flush buffered metrics, tag and terminate the run (retried across an outage),
        then leave MLflow's active-run stack. With the server lost for good, only leave the
        stack: the next search, report or resume closes the run (stale or interrupted)."""
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            # Swallowed on purpose: MLflow's sampler thread logging its last samples (it
            # fails during an outage); the run's own status still follows. Shown by
            # test_faults.py::test_an_outage_mid_trial_loses_nothing (every run FINISHED).
            with suppress(Exception):
                monitor.finish()
        try:
            if not self.guard.lost:
                self.flush_metrics()
                self._set_run_tags(run_id, tags)
                self._call(connection.client().set_terminated, run_id, status)
        finally:
            # Swallowed on purpose: end_run pops MLflow's active-run stack first, then
            # terminates the run, which fails when the server is lost; the next command
            # closes that run (interrupted/stale). Shown by test_faults.py::
            # test_an_outage_beyond_the_budget_stops_cleanly_and_resumes (nothing RUNNING).
            with suppress(Exception):
                mlflow.end_run(status=status)

    def active_run_id(self) -> str:
        return mlflow.active_run().info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: redact(v)[:MAX_PARAM_CHARS] for k, v in params.items()}
        self._call(mlflow.log_params, clean)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call(mlflow.set_tags, {k: redact(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics on the active run. Against a server they are queued and sent in order:
        during an outage the queue grows and training goes on (`flush_metrics` before the
        run ends waits for the server, within the outage budget)."""
        from mlflow.entities import Metric as MetricEntity

        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if not clean:
            return
        run_id = mlflow.active_run().info.run_id
        if not self.guard.remote:
            mlflow.log_metrics(clean, step=step)
        else:
            now = int(time.time() * 1000)
            batch = [MetricEntity(k, v, now, step or 0) for k, v in clean.items()]
            self._pending_metrics.append((run_id, batch))
            self.flush_metrics(wait=False)
        if run_id in self._monitors_wanted:
            self._start_system_metrics(run_id)

    def _start_system_metrics(self, run_id: str) -> None:
        """MLflow's CPU/memory/disk/network sampler for this run (its System metrics tab);
        a run shorter than one interval after its first metrics gets no sample."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitors_wanted.discard(run_id)
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=self.system_metrics_s, tracking_uri=self.uri
        )
        monitor.start()
        self._monitors[run_id] = monitor

    def flush_metrics(self, wait: bool = True) -> None:
        """Send queued metrics in order; without `wait`, stop at the first outage error
        (and try at most every few seconds while the server is down)."""
        if not wait and self.guard.down and time.monotonic() - self._last_flush_try < 5:
            return
        c = connection.client()
        while self._pending_metrics:
            run_id, batch = self._pending_metrics[0]
            if wait:
                self._call(c.log_batch, run_id, metrics=batch)
            else:
                self._last_flush_try = time.monotonic()
                sent, _ = self.guard.try_once(c.log_batch, run_id, metrics=batch)
                if not sent:
                    return
            self._pending_metrics.popleft()

    def close_interrupted(self, parent_id: str, worker: str | None = None) -> int:
        """Children a dead process (or one cluster worker) left RUNNING become FAILED,
        tagged interrupted."""
        closed = 0
        for run in self.trial_runs(parent_id):
            if run.status == Status.RUNNING and (worker is None or run.worker == worker):
                self._close_failed(
                    run.run_id,
                    {
                        Tag.INTERRUPTED: "true",
                        Tag.ERROR: "interrupted: the process died mid-trial",
                    },
                )
                closed += 1
        return closed

    def close_stale(self) -> int:
        """Runs of this experiment RUNNING with no heartbeat for `stale_after_s` (their
        process died unseen: a killed machine, a lost worker) become FAILED, tagged stale.
        Optuna's `fail_stale_trials`, for MLflow runs; runs open in this process are alive."""
        now = time.time()
        closed = 0
        for run in self._search(f"attributes.status = '{Status.RUNNING}'"):
            run_id = run.info.run_id
            if self.heartbeat.watching(run_id):
                continue
            beat = int_tag(run.data.tags.get(Tag.HEARTBEAT)) or (run.info.start_time or 0) // 1000
            silent = now - beat
            # the writer's own limit: a reader's shorter one must not close a live run
            limit = max(self.stale_after_s, float_tag(run.data.tags.get(Tag.STALE_AFTER)) or 0.0)
            if silent > limit:
                self._close_failed(
                    run_id,
                    {
                        Tag.STALE: "true",
                        Tag.ERROR: f"stale: no heartbeat for {silent:.0f}s; its process is gone",
                    },
                )
                closed += 1
        return closed

    def _close_failed(self, run_id: str, tags: dict[str, str]) -> None:
        c = connection.client()
        self._set_run_tags(run_id, {Tag.STATUS: "failed", **tags})
        self._call(c.set_terminated, run_id, status=Status.FAILED)

    def _set_run_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, redact(v)) for k, v in tags.items()]
        self._call(connection.client().log_batch, run_id, tags=batch)

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        self._set_run_tags(run_id, {key: value})
