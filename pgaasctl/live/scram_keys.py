"""SCRAM keys derived once per process, so that a login does not pay PBKDF2 every time.

A SCRAM-SHA-256 login makes libpq run 4,096 rounds of PBKDF2 on the password: 4 ms of CPU here, for every session.
A plan of a large workspace opens one session per database, an apply more, and a fleet's plan several per pair.
libpq 18 takes the client and server keys instead of the password (`scram_client_key`, `scram_server_key`, made for
pass-through logins), so pgaasctl derives them once per server and login, from the login's own verifier read by
its first session, when a second session comes; every later session skips the rounds.

The keys prove the login as well as the password does: they stay in this process's memory, as the password does,
and never reach output, logs, plan files or the store. They are derived only when the verifier was made from the
very password pgaasctl holds (its stored and server keys are checked), so they log in exactly when the password
would. A verifier changed since (a new password, or the same one with a new salt) makes the next login with them
fail: `forget` drops them and the session is opened again with the password.
"""

from __future__ import annotations

import base64
import hashlib
import threading

import psycopg

from pgaasctl.passwords import login_keys

SUPPORTED = psycopg.pq.version() >= 180000  # libpq 18 knows the two parameters
OWN_VERIFIER_SQL = ("SELECT CASE WHEN has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN "
                    "(SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = current_user) END")

Login = tuple[str, int, str, str]  # host, port, user, a digest of the password

# A login's own verifier, read by its first session: the keys are derived from it when a second session comes
# (a login used once, one node of many in a fleet's plan, never pays the derivation). None: not readable.
_verifiers: dict[Login, str | None] = {}
_keys: dict[Login, dict[str, str] | None] = {}  # None: the verifier is not one these keys can be made from
_lock = threading.Lock()


def login_of(host: str, port: int, user: str, password: str) -> Login:
    return host, port, user, hashlib.sha256(password.encode()).hexdigest()


def parameters(login: Login, password: str) -> dict[str, str] | None:
    """The connection parameters that replace PBKDF2 for `login`: derived on its second session, from the
    verifier its first one read."""
    with _lock:
        if login in _keys:
            return _keys[login]
        if login not in _verifiers:
            return None
        verifier = _verifiers[login]
    keys = login_keys(password, verifier)  # PBKDF2 once, outside the lock
    derived = None
    if keys is not None:
        derived = {"scram_client_key": base64.b64encode(keys[0]).decode(),
                   "scram_server_key": base64.b64encode(keys[1]).decode()}
    with _lock:
        _keys[login] = derived
    return derived


def known(login: Login) -> bool:
    with _lock:
        return login in _verifiers or login in _keys


def learn(login: Login, conn: psycopg.Connection) -> None:
    """After a login's first session (an autocommit one): its own verifier, where it may read pg_authid."""
    if not SUPPORTED or known(login):
        return
    try:
        row = conn.execute(OWN_VERIFIER_SQL).fetchone()
    except psycopg.Error:
        row = None
    with _lock:
        _verifiers[login] = row[0] if row else None


def forget(login: Login) -> None:
    with _lock:
        _keys.pop(login, None)
        _verifiers.pop(login, None)


def derived(login: Login) -> dict[str, str] | None:
    """The keys derived for `login` so far (None: none yet, or none can be)."""
    with _lock:
        return _keys.get(login)
