"""API users and tokens in the store: passwords and tokens are shown once and kept only as hashes; a token stops
working when revoked, expired, or its user disabled; user names are checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgaasctl.api.users import (
    authenticate,
    check_password,
    create_token,
    create_user,
    disable_user,
    revoke_token,
    tokens,
    users,
)
from pgaasctl.errors import PgaasError
from pgaasctl.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///api.db", base=tmp_path)
    yield s
    s.close()


def _stored(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.glob("api.db*"))


def test_a_user_signs_in_with_its_one_time_password_which_the_store_never_holds(store: Store, tmp_path: Path) -> None:
    user, password = create_user(store, "alice", "member")
    assert (user.name, user.role, user.disabled) == ("alice", "member", False)
    assert check_password(store, "alice", password) == user
    assert check_password(store, "alice", password + "x") is None
    assert check_password(store, "nobody", password) is None
    assert check_password(store, "Robert'); DROP TABLE users;--", password) is None
    store.close()
    assert password.encode() not in _stored(tmp_path)


def test_names_are_checked_and_unique(store: Store) -> None:
    for bad in ("", "Alice", "1abc", "a b", "a/b", "x" * 64, "é"):
        with pytest.raises(PgaasError, match="is not allowed"):
            create_user(store, bad, "viewer")
    create_user(store, "bob", "viewer")
    with pytest.raises(PgaasError, match="already exists"):
        create_user(store, "bob", "admin")
    assert [u.name for u in users(store)] == ["bob"]


def test_a_token_works_until_revoked_and_the_store_keeps_only_its_hash(store: Store, tmp_path: Path) -> None:
    create_user(store, "carol", "admin")
    token, secret = create_token(store, "carol", days=1)
    assert secret.startswith("pgaas_") and token.id in secret
    assert authenticate(store, secret) is not None and authenticate(store, secret).name == "carol"  # type: ignore[union-attr]
    assert authenticate(store, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert authenticate(store, "pgaas_" + "0" * 16 + "_" + "a" * 43) is None
    assert authenticate(store, "not a token") is None
    assert [t.id for t in tokens(store, "carol")] == [token.id]
    revoke_token(store, token.id)
    assert authenticate(store, secret) is None
    store.close()
    assert secret.split("_", 2)[2].encode() not in _stored(tmp_path)


def test_a_disabled_users_password_and_tokens_stop_at_once(store: Store) -> None:
    _, password = create_user(store, "dave", "member")
    _, secret = create_token(store, "dave")
    disable_user(store, "dave")
    assert authenticate(store, secret) is None and check_password(store, "dave", password) is None
    with pytest.raises(PgaasError, match="disabled"):
        create_token(store, "dave")


def test_an_expired_token_is_refused(store: Store) -> None:
    create_user(store, "erin", "viewer")
    token, secret = create_token(store, "erin", days=1)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat(timespec="seconds")
    store._exec("UPDATE tokens SET expires_at = ? WHERE id = ?", (past, token.id))
    assert authenticate(store, secret) is None


def test_unknown_users_and_tokens_are_named(store: Store) -> None:
    with pytest.raises(PgaasError, match="no user 'ghost'"):
        create_token(store, "ghost")
    with pytest.raises(PgaasError, match="no user 'ghost'"):
        disable_user(store, "ghost")
    with pytest.raises(PgaasError, match="no token"):
        revoke_token(store, "0123456789abcdef")
