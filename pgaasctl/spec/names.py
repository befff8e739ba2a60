"""PostgreSQL identifier rules, checked before any SQL exists."""

from __future__ import annotations

import re

MAX_IDENTIFIER_BYTES = 63
_ALLOWED = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_ALLOWED_CHARS = re.compile(r"[A-Za-z0-9_$-]")


def identifier_problem(name: str, what: str = "name") -> str | None:
    """Return why `name` is not an acceptable identifier, or None when it is.

    Names may use letters, digits, `_`, `$` and `-` and start with a letter or
    `_`. They are always quoted with psycopg.sql.Identifier anyway; the rule
    keeps specs portable and makes quotes, semicolons and spaces an error.
    """
    if not name:
        return f"{what} is empty"
    size = len(name.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        return f"{what} {name[:20]!r}... is {size} bytes; PostgreSQL allows at most {MAX_IDENTIFIER_BYTES}"
    if not _ALLOWED.match(name):
        bad = sorted({c for c in name if not _ALLOWED_CHARS.match(c)})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            return f"{what} {name!r} contains {shown}: use letters, digits, _ $ -"
        return f"{what} {name!r} must start with a letter or _"
    if name.lower().startswith("pg_"):
        return f"{what} {name!r} starts with pg_, which PostgreSQL reserves"
    return None


def check_identifier(name: str, what: str = "name") -> str:
    """Pydantic-friendly validator: raise ValueError with the problem."""
    problem = identifier_problem(name, what)
    if problem:
        raise ValueError(problem)
    return name
