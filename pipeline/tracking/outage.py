"""Riding out a tracking-server outage: retry with backoff within a budget, then stop.

MLflow's REST client fails each call once its own retries are spent, so a trial that logs
while the server restarts would fail although it trained. `OutageGuard.call` retries a
call while the server is unreachable (its `/health` does not answer, or the error is a
connection or gateway error), with exponential backoff, for at most `budget_s` seconds
per outage; any other error is raised at once. Past the budget the guard is *lost*:
every later call raises `TrackingOutage` immediately, so a search stops in seconds, not
one budget per pending call. Local stores (SQLite) are called directly.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from pipeline import progress
from pipeline.errors import UserFacingError, one_line
from pipeline.runtime.redaction import redact

T = TypeVar("T")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
HEALTH_TIMEOUT_S = 3.0
# Errors that mean "the server is not there right now" even if /health answers again.
TRANSIENT_MARKS = (
    "Max retries exceeded",
    "Connection refused",
    "Connection aborted",
    "Connection reset",
    "RemoteDisconnected",
    "Read timed out",
)
# Any 5xx: a server whose database is away answers 503 TEMPORARILY_UNAVAILABLE.
SERVER_ERROR = re.compile(
    r"\b(error|status) code 5\d\d\b|\b5\d\d Server Error\b|TEMPORARILY_UNAVAILABLE"
)
# A read that touches the store (MLflow's /health does not: it answers while the
# database behind the server is down).
STORE_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def auth_headers() -> dict[str, str]:
    """The credentials MLflow's client sends (basic auth or a bearer token)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


class TrackingOutage(UserFacingError, RuntimeError):
    """The tracking server stayed unreachable for longer than `tracking.outage_budget_s`."""


class OutageGuard:
    """Retries calls to one tracking server across outages of up to `budget_s` seconds."""

    def __init__(self, uri: str, budget_s: float, max_delay_s: float = MAX_DELAY_S):
        self.uri = uri
        self.remote = uri.startswith(("http://", "https://"))
        self.budget_s = float(budget_s)
        self.max_delay_s = float(max_delay_s)
        self.down_since: float | None = None
        self.lost = False
        self.outages: list[float] = []  # length of each outage ridden out, seconds
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- calls
    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, retried while the server is unreachable (within budget)."""
        if not self.remote:
            return fn(*args, **kwargs)
        delay = FIRST_DELAY_S
        while True:
            self._raise_if_lost()
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                if self.budget_s <= 0 or not self.is_outage(err):
                    raise
                remaining = self._note_down(err)
                time.sleep(min(delay, max(remaining, 0.05)))
                delay = min(delay * 2, self.max_delay_s)
                continue
            self._note_up()
            return result

    def try_once(self, fn: Callable[..., T], *args, **kwargs) -> tuple[bool, T | None]:
        """One attempt: (True, result), or (False, None) during an outage (budget left)."""
        self._raise_if_lost()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            if not self.remote or self.budget_s <= 0 or not self.is_outage(err):
                raise
            self._note_down(err)
            return False, None
        self._note_up()
        return True, result

    def reset(self) -> None:
        """Forget a lost outage: the next call tries the server again (a long-lived
        process, such as the artifact worker, going on with new work)."""
        with self._lock:
            self.lost = False
            self.down_since = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    # ---------------------------------------------------------------- state
    def is_outage(self, err: BaseException) -> bool:
        text = str(err)
        transient = any(mark in text for mark in TRANSIENT_MARKS) or SERVER_ERROR.search(text)
        return bool(transient) or not self.healthy()

    def healthy(self) -> bool:
        """The server answers a store read (a refused permission is an answer too)."""
        request = urllib.request.Request(self.uri.rstrip("/") + STORE_PROBE, headers=auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as err:
            return err.code < 500
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _note_down(self, err: BaseException) -> float:
        """Record the outage; the budget left, or TrackingOutage once it is spent."""
        now = time.monotonic()
        with self._lock:
            if self.down_since is None:
                self.down_since = now
                progress.say(
                    f"tracking: server {redact(self.uri)} unreachable ({one_line(err, 120)}); "
                    f"training goes on, logging retries for up to {self.budget_s:.0f}s "
                    "(tracking.outage_budget_s)"
                )
            remaining = self.budget_s - (now - self.down_since)
            if remaining <= 0:
                self.lost = True
        self._raise_if_lost()
        return remaining

    def _note_up(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            self.outages.append(lasted)
        progress.say(f"tracking: server {redact(self.uri)} is back after {lasted:.0f}s")

    def _raise_if_lost(self) -> None:
        if self.lost:
            raise TrackingOutage(
                f"tracking: server {redact(self.uri)} unreachable for more than "
                f"{self.budget_s:.0f}s (tracking.outage_budget_s)"
            )
