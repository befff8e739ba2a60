"""SCRAM-SHA-256 verifiers: built client-side (the plain password never reaches the server) and checked for drift."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ITERATIONS = 4096


_PROHIBITED = (
    stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
    stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9, stringprep.in_table_a1,
)


def _normalise(password: str) -> bytes:
    """SASLprep (RFC 4013) as PostgreSQL applies it; where it fails, PostgreSQL uses the password as is."""
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    # non-ASCII spaces become spaces first (U+200B is in both tables), then B.1 characters are dropped
    mapped = "".join(" " if stringprep.in_table_c12(c) else "" if stringprep.in_table_b1(c) else c for c in password)
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared or any(check(c) for c in prepared for check in _PROHIBITED):
        return raw
    if any(stringprep.in_table_d1(c) for c in prepared):  # right-to-left text: the bidi rules of RFC 3454
        if any(stringprep.in_table_d2(c) for c in prepared):
            return raw
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return raw
    return prepared.encode("utf-8")


def _client_and_server_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", _normalise(password), salt, iterations)
    return hmac.new(salted, b"Client Key", hashlib.sha256).digest(), hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """The stored key and server key a verifier of `password` holds."""
    client_key, server_key = _client_and_server_keys(password, salt, iterations)
    return hashlib.sha256(client_key).digest(), server_key


def _parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """iterations, salt, stored key, server key of a SCRAM-SHA-256 verifier; ValueError if it is not one."""
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise ValueError("not a SCRAM-SHA-256 verifier")
    head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$", 1)
    iterations, salt = head.split(":", 1)
    stored, server = keys.split(":", 1)
    return int(iterations), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)


def login_keys(password: str, verifier: str | None) -> tuple[bytes, bytes] | None:
    """The SCRAM client key and server key a login with `password` proves itself with, when `verifier` (the
    role's pg_authid.rolpassword) was made from that password; else None."""
    try:
        iterations, salt, stored, server = _parse_verifier(verifier or "")
    except ValueError:
        return None
    client_key, server_key = _client_and_server_keys(password, salt, iterations)
    if hmac.compare_digest(hashlib.sha256(client_key).digest(), stored) and hmac.compare_digest(server_key, server):
        return client_key, server_key
    return None


def salt_of(verifier: str | None) -> tuple[str, int] | None:
    """The salt (base64) and iteration count of a SCRAM-SHA-256 verifier: what the server tells anyone who starts a
    SCRAM login as that role, so nothing secret; None for any other verifier."""
    try:
        iterations, salt, _, _ = _parse_verifier(verifier or "")
    except ValueError:
        return None
    return base64.b64encode(salt).decode(), iterations


def salted_login_keys(password: str, salt: str, iterations: int) -> tuple[bytes, bytes]:
    """The SCRAM client and server keys of `password` with a known salt: what a login proves itself with."""
    return _client_and_server_keys(password, base64.b64decode(salt), iterations)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(16)
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def password_matches(password: str, verifier: str | None, role: str) -> bool:
    """Whether `verifier` (pg_authid.rolpassword) was made from `password`."""
    if not verifier:
        return False
    if verifier.startswith("SCRAM-SHA-256$"):
        return login_keys(password, verifier) is not None
    if verifier.startswith("md5"):
        return hmac.compare_digest(verifier, "md5" + hashlib.md5((password + role).encode()).hexdigest())
    return False


@dataclass(frozen=True)
class PasswordCheck:
    """What the plan needs to know of one role's password: does the server's match, and a new verifier if not.
    `md5`: the server holds an md5 hash of this very password, which pg_hba's scram-sha-256 method refuses."""

    matches: bool
    verifier: str | None
    md5: bool = False


def check_password(password: str, live_verifier: str | None, role: str, exists: bool, readable: bool) -> PasswordCheck:
    if exists and not readable:
        return PasswordCheck(matches=True, verifier=None)  # drift cannot be seen; the plan says so
    if exists and password_matches(password, live_verifier, role):
        if live_verifier and live_verifier.startswith("md5"):
            return PasswordCheck(matches=False, verifier=scram_verifier(password), md5=True)
        return PasswordCheck(matches=True, verifier=None)
    return PasswordCheck(matches=False, verifier=scram_verifier(password))


def check_passwords(passwords: dict[str, str], verifiers: dict[str, str | None], readable: bool,
                    workers: int = 4, remembered: Callable[[str, str, str | None], bool] | None = None
                    ) -> dict[str, PasswordCheck]:
    """check_password for many roles; PBKDF2 releases the GIL, so threads use every core. `remembered`: whether a
    (role, password, verifier) was checked to match before (pgaasctl/password_memory.py): then no PBKDF2."""

    def one(name: str) -> tuple[str, PasswordCheck]:
        if readable and name in verifiers and remembered is not None and \
                remembered(name, passwords[name], verifiers[name]):
            return name, PasswordCheck(matches=True, verifier=None)
        return name, check_password(passwords[name], verifiers.get(name), name, name in verifiers, readable)

    if len(passwords) < 8:
        return dict(map(one, passwords))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, passwords))
