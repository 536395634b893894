"""Credentials never reach a log line, a tag or a param: `redact` hides them."""

from __future__ import annotations

import re
from typing import Any

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_PASSWORD = re.compile(r"(?P<user>[a-zA-Z][\w+.-]*://[^/@:\s]*):[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<k>token|password|passwd|secret|api[_-]?key|access[_-]?key)=[^&\s]+"
)


def redact(value: Any) -> str:
    """Hide `user:password@` in URIs and token-like query values."""
    text = str(value)
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(r"\g<k>=***", text)


def without_password(uri: str) -> str:
    """`scheme://user:password@host` -> `scheme://user@host`: what a process that signs in
    with its own variables (PGPASSWORD, .pgpass, MLFLOW_TRACKING_PASSWORD) may be told."""
    return _SECRET_QUERY.sub(r"\g<k>=***", _PASSWORD.sub(r"\g<user>@", uri))
