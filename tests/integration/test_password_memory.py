"""Issue 13: a plan does not pay PBKDF2 for passwords checked before (pgaasctl/password_memory.py), and still sees
every change of a password, on the server or in the spec."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import pgaasctl.passwords
from tests.support.pgserver import PgServer
from tests.support.workspace import Workspace

pytestmark = pytest.mark.integration

ROLES = ["mem_a", "mem_b", "mem_c"]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, pg: PgServer) -> list[int]:
    """How many PBKDF2 derivations pgaasctl made for role passwords (in this process: the CLI runs in it). Its own
    login's keys, derived once per process (pgaasctl/live/scram_keys.py), are not counted."""
    calls = [0]
    real = pgaasctl.passwords._client_and_server_keys

    def keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
        if password != pg.admin_password:
            calls[0] += 1
        return real(password, salt, iterations)

    monkeypatch.setattr(pgaasctl.passwords, "_client_and_server_keys", keys)
    return calls


def _roles(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.pair()
    for role in ROLES:
        monkeypatch.setenv(f"PW_{role.upper()}", f"secret-of-{role}")
    ws.write("roles.yaml", "---\n".join(
        f"kind: Role\nmetadata: {{name: {r}, pair: main}}\nspec: {{login: true, password: {{env: PW_{r.upper()}}}}}\n"
        for r in ROLES))


def test_a_plan_after_apply_derives_no_password_and_still_sees_every_change(
        ws: Workspace, pg: PgServer, monkeypatch: pytest.MonkeyPatch, counted: list[int]) -> None:
    _roles(ws, monkeypatch)
    ws.must_apply()
    key = ws.specs / "state" / "secrets" / "password-checks.key"  # the workspace root: the spec directory here
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
    store_bytes = Path(ws.store_url.removeprefix("sqlite:///")).read_bytes()
    assert key.read_bytes().strip() not in store_bytes, "the key is never in the store"
    assert not any(f"secret-of-{r}".encode() in store_bytes for r in ROLES), "no password in the store"

    counted[0] = 0
    ws.assert_converged()
    assert counted[0] == 0, "every password was remembered: no PBKDF2"

    # changed on the server by someone: the verifier differs, the full check runs and finds it
    pg.execute("ALTER ROLE mem_a PASSWORD 'changed-by-hand'")
    drift = ws.plan()
    assert "role.main.mem_a" in drift.output and "mem_b" not in drift.output, drift.output
    # changed in the spec: the digest differs
    monkeypatch.setenv("PW_MEM_B", "a-new-secret")
    changed = ws.plan()
    assert "role.main.mem_b" in changed.output, changed.output
    ws.must_apply()
    ws.assert_converged()

    # another machine (no key): the full check, the same answer
    key.unlink()
    counted[0] = 0
    ws.assert_converged()
    assert counted[0] >= len(ROLES)
