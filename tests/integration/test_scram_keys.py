"""Issue 13: pgaasctl derives its login's SCRAM keys once per process (pgaasctl/live/scram_keys.py); later sessions
log in with them, and a verifier changed since falls back to the password."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

import pgaasctl.passwords
from pgaasctl.errors import ConnectionFailed
from pgaasctl.live import scram_keys
from pgaasctl.live.connect import NodeAddress, connect
from tests.support.pgserver import PgServer

pytestmark = pytest.mark.integration


def new_process() -> None:
    """What a new pgaasctl process knows: nothing but the salts its workspace remembers (load_salts)."""
    scram_keys._keys.clear()
    scram_keys._verifiers.clear()
    scram_keys._salted.clear()
    scram_keys._salts.clear()
    scram_keys._salt_file = None


@pytest.fixture(autouse=True)
def fresh_keys() -> Iterator[None]:
    new_process()
    yield
    new_process()


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times PBKDF2 ran to derive a login's keys."""
    count = [0]
    real = pgaasctl.passwords._client_and_server_keys

    def counted(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
        count[0] += 1
        return real(password, salt, iterations)

    monkeypatch.setattr(pgaasctl.passwords, "_client_and_server_keys", counted)
    return count


def node(pg: PgServer, user: str | None = None, password: str | None = None) -> NodeAddress:
    return NodeAddress(pair="p", name="a", host=pg.host, port=pg.port, user=user or pg.admin_user,
                       password=SecretStr(password or pg.admin_password), admin_database="postgres", sslmode="prefer",
                       connect_timeout=5)


def login(address: NodeAddress) -> scram_keys.Login:
    assert address.password is not None
    return scram_keys.login_of(address.host, address.port, address.user, address.password.get_secret_value())


def current_user(address: NodeAddress) -> str:
    with connect(address) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]


def test_keys_are_derived_once_at_the_second_session_and_later_sessions_log_in_with_them(
        pg: PgServer, derivations: list[int]) -> None:
    assert scram_keys.SUPPORTED, "psycopg-binary bundles libpq 18"
    admin = node(pg)
    assert current_user(admin) == pg.admin_user
    assert derivations[0] == 0 and scram_keys.derived(login(admin)) is None, "a login used once derives nothing"
    assert current_user(admin) == pg.admin_user
    learnt = scram_keys.derived(login(admin))
    assert learnt is not None and set(learnt) == {"scram_client_key", "scram_server_key"}
    assert pg.admin_password not in "".join(learnt.values())
    for _ in range(5):
        assert current_user(admin) == pg.admin_user
    assert derivations[0] == 1


def test_keys_are_made_only_from_a_verifier_of_the_very_password(pg: PgServer) -> None:
    verifier = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")[0][0]
    assert pgaasctl.passwords.login_keys(pg.admin_password, verifier) is not None
    assert pgaasctl.passwords.login_keys("not-the-password", verifier) is None
    assert pgaasctl.passwords.login_keys(pg.admin_password, "md5" + "0" * 32) is None


def test_a_new_salt_on_the_server_falls_back_to_the_password_and_learns_again(pg: PgServer) -> None:
    admin = node(pg)
    for _ in range(2):
        assert current_user(admin) == pg.admin_user
    before = scram_keys.derived(login(admin))
    assert before is not None
    # the same password, set again: a new salt, so the keys derived before no longer log in
    pg.execute(f"SET password_encryption = 'scram-sha-256'; ALTER ROLE {pg.admin_user} PASSWORD '{pg.admin_password}'")
    for _ in range(2):  # the first falls back to the password and reads the new verifier; the second derives
        assert current_user(admin) == pg.admin_user
    after = scram_keys.derived(login(admin))
    assert after is not None and after != before


def test_a_login_that_cannot_read_its_verifier_keeps_using_its_password(pg: PgServer) -> None:
    pg.execute("CREATE ROLE plain_login LOGIN PASSWORD 'plain-secret'")
    plain = node(pg, "plain_login", "plain-secret")
    assert current_user(plain) == "plain_login"
    assert current_user(plain) == "plain_login"
    assert scram_keys.known(login(plain)) and scram_keys.derived(login(plain)) is None
    assert current_user(plain) == "plain_login"


def test_a_wrong_password_is_still_refused_after_the_right_one_learnt_keys(pg: PgServer) -> None:
    assert current_user(node(pg)) == pg.admin_user
    with pytest.raises(ConnectionFailed, match="authentication failed"):
        current_user(node(pg, password="wrong-password"))


def test_a_remembered_salt_lets_a_new_process_derive_the_keys_before_its_first_session(
        pg: PgServer, tmp_path: Path, derivations: list[int]) -> None:
    """The workspace remembers each server's salt and iteration count (no secret: the server tells them to anyone
    who starts a login), never a password or a key; the next process logs in with keys from its first session."""
    salts = tmp_path / "secrets" / scram_keys.SALTS_FILE
    admin = node(pg)
    scram_keys.load_salts(salts)
    assert current_user(admin) == pg.admin_user
    scram_keys.save_salts()
    text = salts.read_text()
    verifier = pg.execute(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{pg.admin_user}'")[0][0]
    assert json.loads(text) == [{"host": pg.host, "port": pg.port, "user": pg.admin_user,
                                 "salt": verifier.split("$")[1].split(":")[1], "iterations": 4096}]
    assert pg.admin_password not in text and verifier.split("$")[2].split(":")[0] not in text
    assert (salts.parent / ".gitignore").exists()

    new_process()
    scram_keys.load_salts(salts)
    derivations[0] = 0
    assert current_user(admin) == pg.admin_user
    assert scram_keys.derived(login(admin)) is not None and derivations[0] == 1
    assert login(admin) not in scram_keys._verifiers, "a session that logged in with keys reads no verifier"
    for _ in range(3):
        assert current_user(admin) == pg.admin_user
    assert derivations[0] == 1


def test_a_stale_remembered_salt_costs_one_refusal_then_the_password_logs_in_and_the_salt_is_learnt(
        pg: PgServer, tmp_path: Path) -> None:
    salts = tmp_path / scram_keys.SALTS_FILE
    stale = base64.b64encode(b"not the salt 123").decode()
    salts.write_text(json.dumps([{"host": pg.host, "port": pg.port, "user": pg.admin_user, "salt": stale,
                                  "iterations": 4096}]))
    scram_keys.load_salts(salts)
    admin = node(pg)
    assert current_user(admin) == pg.admin_user  # refused with the keys of the stale salt, then the password
    scram_keys.save_salts()
    [remembered] = json.loads(salts.read_text())
    assert remembered["salt"] != stale
    assert current_user(admin) == pg.admin_user


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '[{"host": "h"}]', "null"])
def test_an_unreadable_salts_file_is_a_cache_miss(pg: PgServer, tmp_path: Path, text: str) -> None:
    salts = tmp_path / scram_keys.SALTS_FILE
    salts.write_text(text)
    scram_keys.load_salts(salts)
    assert current_user(node(pg)) == pg.admin_user
