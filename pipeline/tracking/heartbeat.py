"""A cheap sign of life for every open run, so a run whose process died unseen can be
told from one still training (`Tracker.close_stale`, like Optuna's heartbeat and
`fail_stale_trials`).

One daemon thread per process sets the `heartbeat` tag (unix seconds) of each watched run
every `interval_s`. It never raises and never waits for a lost server: a missed beat is
only a later one; beats stop when the process dies, which is the point.
"""

from __future__ import annotations

import threading
import time

from pipeline.tracking.schema import Tag


class Heartbeat:
    def __init__(self, interval_s: float):
        self.interval_s = float(interval_s)
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.beats = 0  # tags written (for tests and benchmarks)

    def watch(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)
            if self.interval_s > 0 and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
                self._thread.start()

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)

    def watching(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def _loop(self) -> None:
        from mlflow.tracking import MlflowClient

        while True:
            time.sleep(self.interval_s)
            with self._lock:
                runs = sorted(self._runs)
            now = str(int(time.time()))
            for run_id in runs:
                try:
                    MlflowClient().set_tag(run_id, Tag.HEARTBEAT, now)
                    self.beats += 1
                # Swallowed on purpose: an outage or a run closed meanwhile; the next beat
                # will do, and a run is only stale after tracking.stale_after_s without one.
                # Shown by test_faults.py::test_an_outage_mid_trial_loses_nothing.
                except Exception:
                    continue
