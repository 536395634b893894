"""Search: the YAML space as keras-tuner hyperparameters, the tuner whose trials are
MLflow child runs, seed replicates, the ledger (new or resumed search), the outcome, and
reproduce (which re-runs a trial through the same trial code).

`from pipeline.search import run_search` loads TensorFlow and keras-tuner only when
asked for; `python -m pipeline.search` is the command line (`__main__`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SearchOutcome", "reproduce_run", "run_search"]


def __getattr__(name: str) -> Any:
    if name == "run_search":
        from pipeline.search.run import run_search

        return run_search
    if name == "reproduce_run":
        from pipeline.search.reproduction import reproduce_run

        return reproduce_run
    if name == "SearchOutcome":
        from pipeline.search.outcome import SearchOutcome

        return SearchOutcome
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
