"""Saved plans: JSON with fingerprints of the specs, of each pair's live state and of the secrets, and a
checksum keyed by the state store, so that a plan is applied exactly as reviewed or refused with the reason.

The spec directory is saved relative to the plan file, so the plan applies from any directory (and after
the checkout moved along with the file). No secret is inside.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pgaasctl.errors import PgaasError, StalePlan
from pgaasctl.plan.model import Plan

MARKER = "pgaasctl-plan"
_REPLAN = "Make a new plan with `pgaasctl plan --out FILE` and review it."


def secret_fingerprint(key: bytes, address: str, secret: str) -> str:
    return hmac.new(key, f"{address}\0{secret}".encode(), hashlib.sha256).hexdigest()


def _checksum(key: bytes, data: dict[str, Any]) -> str:
    return hmac.new(key, json.dumps(data, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def save_plan(plan: Plan, path: Path, key: bytes) -> None:
    data = plan.fingerprinted().model_dump(mode="json")
    data["spec_path"] = os.path.relpath(plan.spec_path, Path(os.path.abspath(path)).parent)
    out = {"format": MARKER, **data, "checksum": _checksum(key, data)}
    try:
        path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise PgaasError(f"cannot write plan file {path}: {exc.strerror}") from None


def is_plan_file(path: Path) -> bool:
    if not path.is_file() or path.suffix.lower() in (".yaml", ".yml"):
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            return MARKER in handle.read(200)
    except (OSError, UnicodeDecodeError):
        return False


class SavedPlan:
    """A plan file as read: the plan (spec_path made absolute) and what is needed to check it was not edited."""

    def __init__(self, path: Path, plan: Plan, data: dict[str, Any], checksum: str) -> None:
        self.path, self.plan, self._data, self._checksum = path, plan, data, checksum

    def verify(self, key: bytes) -> None:
        if not hmac.compare_digest(self._checksum, _checksum(key, self._data)):
            raise StalePlan(f"the plan file {self.path} was changed after it was made (or was made with another "
                            "state store)", _REPLAN)


def load_plan(path: Path) -> SavedPlan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        data.pop("format", None)
        checksum = str(data.pop("checksum", ""))
        plan = Plan.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise PgaasError(f"{path} is not a readable pgaasctl plan file: {str(exc).splitlines()[0]}") from None
    plan.spec_path = os.path.normpath(Path(os.path.abspath(path)).parent / plan.spec_path)
    return SavedPlan(path, plan, data, checksum)


def check_still_valid(saved: Plan, fresh: Plan, path: Path) -> None:
    """Refuse a saved plan when the specs, a secret, or any pair's live state changed since it was made."""
    if saved.spec_fingerprint != fresh.spec_fingerprint:
        raise StalePlan(f"the saved plan {path} is stale: the specs under {saved.spec_path} changed since it was made",
                        _REPLAN)
    changed = sorted(a for a in set(saved.secret_fingerprints) | set(fresh.secret_fingerprints)
                     if saved.secret_fingerprints.get(a) != fresh.secret_fingerprints.get(a))
    if changed:
        raise StalePlan(f"the saved plan {path} is stale: the password of {', '.join(changed)} changed since it "
                        "was made (its env var or file holds another value)", _REPLAN)
    fresh_pairs = {p.pair: p for p in fresh.pairs}
    for pair in saved.pairs:
        now = fresh_pairs.get(pair.pair)
        if now is None or now.fingerprinted() != pair.live_fingerprint or (
            [c.model_dump() for c in now.changes] != [c.model_dump() for c in pair.changes]
        ):
            raise StalePlan(f"the saved plan {path} is stale: pair {pair.pair!r} changed on the server since the plan "
                            "was made", _REPLAN)
