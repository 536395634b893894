"""Console lines a user can follow (no logging framework, no colours, no heavy imports)."""

from __future__ import annotations

import sys
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def say(message: str = "") -> None:
    print(message, file=sys.stdout, flush=True)


def format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
