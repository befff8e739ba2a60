"""SCRAM keys derived once per process, so that a login does not pay PBKDF2 every time.

A SCRAM-SHA-256 login makes libpq run 4,096 rounds of PBKDF2 on the password: 4 ms of CPU here, for every session.
A plan of a large workspace opens one session per database, an apply more, and a fleet's plan several per pair.
libpq 18 takes the client and server keys instead of the password (`scram_client_key`, `scram_server_key`, made for
pass-through logins), so pgaasctl derives them once per server and login, from the login's own verifier, and
every later session skips the rounds.

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

_keys: dict[Login, dict[str, str] | None] = {}  # None: this login's verifier cannot be read (or is not SCRAM)
_lock = threading.Lock()


def login_of(host: str, port: int, user: str, password: str) -> Login:
    return host, port, user, hashlib.sha256(password.encode()).hexdigest()


def parameters(login: Login) -> dict[str, str] | None:
    """The connection parameters that replace PBKDF2 for `login`, once learnt."""
    with _lock:
        return _keys.get(login)


def known(login: Login) -> bool:
    with _lock:
        return login in _keys


def learn(login: Login, password: str, conn: psycopg.Connection) -> None:
    """After a login with the password (an autocommit session): its keys, from its own verifier. A login that
    cannot read pg_authid (not a superuser) is remembered as such and keeps using the password."""
    if not SUPPORTED or known(login):
        return
    try:
        row = conn.execute(OWN_VERIFIER_SQL).fetchone()
    except psycopg.Error:
        row = None
    keys = login_keys(password, row[0] if row else None)
    learnt = None
    if keys is not None:
        learnt = {"scram_client_key": base64.b64encode(keys[0]).decode(),
                  "scram_server_key": base64.b64encode(keys[1]).decode()}
    with _lock:
        _keys[login] = learnt


def forget(login: Login) -> None:
    with _lock:
        _keys.pop(login, None)
