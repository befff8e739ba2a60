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

Across processes, the salt and iteration count of each server's verifier are remembered (Workspace secrets_dir,
`login-salts.json`): the server tells them to anyone who starts a SCRAM login as that role, so they are no secret,
and nothing derived from a password is written. With them a process derives the keys before its first session on a
server, once per salt: the nodes of a pair (clones, one verifier) share one derivation. A remembered salt that is
no longer the server's (the password was set again there) costs one refused login, then the password logs in and
the new salt is remembered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from pathlib import Path

import psycopg

from pgaasctl.passwords import login_keys, salt_of, salted_login_keys
from providers.secrets_files import ignored_by_git

SUPPORTED = psycopg.pq.version() >= 180000  # libpq 18 knows the two parameters
OWN_VERIFIER_SQL = ("SELECT CASE WHEN has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN "
                    "(SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = current_user) END")

Login = tuple[str, int, str, str]  # host, port, user, a digest of the password

# A login's own verifier, read by its first session: the keys are derived from it when a second session comes
# (a login used once, one node of many in a fleet's plan, never pays the derivation). None: not readable.
_verifiers: dict[Login, str | None] = {}
_keys: dict[Login, dict[str, str] | None] = {}  # None: the verifier is not one these keys can be made from
_lock = threading.Lock()

SALTS_FILE = "login-salts.json"  # in the Workspace's secrets_dir
Server = tuple[str, int, str]  # host, port, user
_salts: dict[Server, tuple[str, int]] = {}  # the salt and iterations of each server's verifier, as last seen
_salted: dict[tuple[str, str, int], dict[str, str]] = {}  # (password digest, salt, iterations) -> keys: one PBKDF2
_salt_file: Path | None = None
_salts_changed = False


def login_of(host: str, port: int, user: str, password: str) -> Login:
    return host, port, user, hashlib.sha256(password.encode()).hexdigest()


def _as_parameters(keys: tuple[bytes, bytes]) -> dict[str, str]:
    return {"scram_client_key": base64.b64encode(keys[0]).decode(),
            "scram_server_key": base64.b64encode(keys[1]).decode()}


def parameters(login: Login, password: str) -> dict[str, str] | None:
    """The connection parameters that replace PBKDF2 for `login`: derived before its first session from the
    server's remembered salt, else on its second session from the verifier its first one read."""
    if not SUPPORTED:
        return None
    with _lock:
        if login in _keys:
            return _keys[login]
        learnt = login in _verifiers
        verifier = _verifiers.get(login)
        salt = None if learnt else _salts.get(login[:3])
        if salt is not None and (login[3], *salt) in _salted:
            _keys[login] = _salted[(login[3], *salt)]
            return _keys[login]
    if not learnt:
        if salt is None:
            return None
        # from the remembered salt alone, unchecked: a refused login tells (connect calls forget)
        derived = _as_parameters(salted_login_keys(password, *salt))
        with _lock:
            _keys[login] = _salted[(login[3], *salt)] = derived
        return derived
    keys = login_keys(password, verifier)  # PBKDF2 once, outside the lock
    derived = _as_parameters(keys) if keys is not None else None
    salt = salt_of(verifier)
    with _lock:
        _keys[login] = derived
        if derived is not None and salt is not None:
            _salted[(login[3], *salt)] = derived
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
    verifier = row[0] if row else None
    salt = salt_of(verifier)
    global _salts_changed
    with _lock:
        _verifiers[login] = verifier
        if salt is not None and _salts.get(login[:3]) != salt:
            _salts[login[:3]] = salt
            _salts_changed = True


def forget(login: Login) -> None:
    global _salts_changed
    with _lock:
        _keys.pop(login, None)
        _verifiers.pop(login, None)
        if _salts.pop(login[:3], None) is not None:
            _salts_changed = True


def load_salts(path: Path) -> None:
    """The salts remembered in `path` (a workspace's), in place of any others; save_salts() writes them back."""
    global _salt_file, _salts_changed
    try:
        rows = json.loads(path.read_text())
        remembered = {(r["host"], int(r["port"]), r["user"]): (str(r["salt"]), int(r["iterations"])) for r in rows}
    except (OSError, ValueError, TypeError, KeyError):
        remembered = {}  # none yet, or unreadable: they are learnt again
    with _lock:
        _salts.clear()
        _salts.update(remembered)
        _salt_file, _salts_changed = path, False


def save_salts() -> None:
    """Write the salts back when a session learnt a new one or a refusal dropped one (best effort: a cache)."""
    global _salts_changed
    with _lock:
        if _salt_file is None or not _salts_changed:
            return
        rows = [{"host": h, "port": p, "user": u, "salt": salt, "iterations": n}
                for (h, p, u), (salt, n) in sorted(_salts.items())]
        path, _salts_changed = _salt_file, False
    try:
        ignored_by_git(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(rows, indent=1) + "\n")
        temporary.replace(path)
    except OSError:
        pass  # a cache: the next process learns them again


def derived(login: Login) -> dict[str, str] | None:
    """The keys derived for `login` so far (None: none yet, or none can be)."""
    with _lock:
        return _keys.get(login)
