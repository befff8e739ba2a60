"""Saved plans: JSON with fingerprints of the specs and of each pair's live state. No secrets inside."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from pgaasctl.errors import PgaasError, StalePlan
from pgaasctl.plan.model import Plan

MARKER = "pgaasctl-plan"


def save_plan(plan: Plan, path: Path) -> None:
    data = {"format": MARKER, **plan.model_dump(mode="json")}
    try:
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise PgaasError(f"cannot write plan file {path}: {exc.strerror}") from None


def is_plan_file(path: Path) -> bool:
    if not path.is_file() or path.suffix in (".yaml", ".yml"):
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            return MARKER in handle.read(200)
    except (OSError, UnicodeDecodeError):
        return False


def load_plan(path: Path) -> Plan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("format", None)
        return Plan.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise PgaasError(f"{path} is not a readable pgaasctl plan file: {str(exc).splitlines()[0]}") from None


def check_still_valid(saved: Plan, fresh: Plan, path: Path) -> None:
    """Refuse a saved plan when the specs or any pair's live state changed since it was made."""
    if saved.spec_fingerprint != fresh.spec_fingerprint:
        raise StalePlan(
            f"the saved plan {path} is stale: the specs under {saved.spec_path} changed since it was made",
            "Make a new plan with `pgaasctl plan --out FILE` and review it.",
        )
    fresh_pairs = {p.pair: p for p in fresh.pairs}
    for pair in saved.pairs:
        now = fresh_pairs.get(pair.pair)
        if now is None or now.live_fingerprint != pair.live_fingerprint or (
            [c.model_dump() for c in now.changes] != [c.model_dump() for c in pair.changes]
        ):
            raise StalePlan(
                f"the saved plan {path} is stale: pair {pair.pair!r} changed on the server since the plan was made",
                "Make a new plan with `pgaasctl plan --out FILE` and review it.",
            )
