"""A barrier instead of long training as a clock, for tests that signal or kill a search.

Listed in a search's `plugins`, with `EPOCH_BARRIER=<file>` and `EPOCH_BARRIER_AFTER=N`
in the process's environment: once N epochs have been logged in this process, every
epoch end waits (after its metrics are logged) until the file exists. A test starts a
search with tiny, fast trials and knows it is blocked mid-trial, with a logged epoch,
for as long as the test needs. Without the variables (an in-process resume in the test
itself) nothing waits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.search import trial

_logged = {"epochs": 0}
_original = trial.MetricsLogger.on_epoch_end


def _on_epoch_end(self, epoch, logs=None):
    _original(self, epoch, logs)
    barrier, after = os.environ.get("EPOCH_BARRIER"), os.environ.get("EPOCH_BARRIER_AFTER")
    if not barrier or after is None:
        return
    _logged["epochs"] += 1
    if _logged["epochs"] >= int(after):
        self.tracker.flush_metrics()
        while not Path(barrier).exists():
            time.sleep(0.05)


if getattr(trial.MetricsLogger.on_epoch_end, "__name__", "") != "_on_epoch_end":
    trial.MetricsLogger.on_epoch_end = _on_epoch_end
