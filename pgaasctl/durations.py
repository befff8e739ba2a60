"""Durations as people write them on the command line: 5s, 500ms, 2m, 24h, 7d (a bare number is seconds)."""

from __future__ import annotations

import re

from pgaasctl.errors import PgaasError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*")


def parse_duration(text: str, what: str) -> float:
    """Seconds; a clear error naming `what` (e.g. "--interval") for anything else, zero and negatives included."""
    match = PATTERN.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise PgaasError(f"{what}: {text!r} is not a duration",
                         "Write a positive number with a unit: 500ms, 5s, 2m, 24h or 7d.")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]
