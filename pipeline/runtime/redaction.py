"""Credentials never reach a log line, a tag or a param: `redact` hides them."""

from __future__ import annotations

import re
from typing import Any

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<k>token|password|passwd|secret|api[_-]?key|access[_-]?key)=[^&\s]+"
)


def redact(value: Any) -> str:
    """Hide `user:password@` in URIs and token-like query values."""
    text = str(value)
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_QUERY.sub(r"\g<k>=***", text)
