"""Turn an exception into the one line a user should read."""

from __future__ import annotations

import re


class UserFacingError(Exception):
    """Base of the errors whose message is the whole story (bad input, unusable store,
    a search that cannot go on): commands print it as one line and exit 2."""


class SearchError(UserFacingError, RuntimeError):
    """The search as a whole could not go on; the message says why."""


_NAMED = re.compile(r"^\s*(\w+(Error|Exception)): (.+)$")


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first informative line; TensorFlow's 'Graph execution error:' wraps the real one."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        named = [m.group(0).strip() for ln in lines[1:] if (m := _NAMED.match(ln))]
        text = named[-1] if named else f"{text} {lines[1]}"
    return text[:limit]
