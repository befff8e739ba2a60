"""PostgreSQL identifier rules, checked before any SQL exists, and the one rule every spec string keeps."""

from __future__ import annotations

import re

MAX_IDENTIFIER_BYTES = 63
_ALLOWED = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]*")
_ALLOWED_CHARS = re.compile(r"[A-Za-z0-9_$-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Schemas PostgreSQL keeps for itself; pg_* ones are refused by the pg_ rule already.
RESERVED_SCHEMAS = frozenset({"information_schema"})


def control_character_problem(text: str) -> str | None:
    """Why `text` cannot be in a spec: a control character (newline, NUL, escape...) would reach SQL, psql
    scripts, shell command lines or one-line messages. None when there is none."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    return f"contains a control character (U+{ord(found.group()):04X}) in {text!r}; remove it"


def identifier_problem(name: str, what: str = "name", reserved_prefix: bool = True) -> str | None:
    """Return why `name` is not an acceptable identifier, or None when it is.

    Names may use letters, digits, `_`, `$` and `-` and start with a letter or
    `_`. They are always quoted with psycopg.sql.Identifier anyway; the rule
    keeps specs portable and makes quotes, semicolons, spaces and control
    characters an error. `reserved_prefix=False` accepts pg_ names that already
    exist (predefined roles, an admin database).
    """
    if not name:
        return f"{what} is empty"
    size = len(name.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        return f"{what} {name[:20]!r}... is {size} bytes; PostgreSQL allows at most {MAX_IDENTIFIER_BYTES}"
    if not _ALLOWED.fullmatch(name):
        bad = sorted({c for c in name if not _ALLOWED_CHARS.fullmatch(c)})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            return f"{what} {name!r} contains {shown}: use letters, digits, _ $ -"
        return f"{what} {name!r} must start with a letter or _"
    if reserved_prefix and name.lower().startswith("pg_"):
        return f"{what} {name!r} starts with pg_, which PostgreSQL reserves"
    return None


def schema_problem(name: str) -> str | None:
    """identifier_problem, plus the schemas PostgreSQL reserves (the catalog read never shows them)."""
    if name.lower() in RESERVED_SCHEMAS:
        return f"{name} is PostgreSQL's own schema (reserved): pgaasctl cannot manage it; use another schema"
    return identifier_problem(name, "schema")


def check_identifier(name: str, what: str = "name") -> str:
    """Pydantic-friendly validator: raise ValueError with the problem."""
    problem = identifier_problem(name, what)
    if problem:
        raise ValueError(problem)
    return name


def check_existing_name(name: str) -> str:
    """An identifier that may start with pg_: the name of something that already exists."""
    problem = identifier_problem(name, reserved_prefix=False)
    if problem:
        raise ValueError(problem)
    return name


def check_schema(name: str) -> str:
    problem = schema_problem(name)
    if problem:
        raise ValueError(problem)
    return name
