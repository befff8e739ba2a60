"""SCRAM-SHA-256 verifiers: built client-side (the plain password never reaches the server) and checked for drift."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata

ITERATIONS = 4096


def _normalise(password: str) -> bytes:
    # PostgreSQL applies SASLprep; NFKC is its core and matches it for ordinary passwords.
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", _normalise(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


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
        try:
            head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$", 1)
            iterations, salt = head.split(":", 1)
            stored, server = keys.split(":", 1)
            stored_key, server_key = _keys(password, base64.b64decode(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(stored_key, base64.b64decode(stored)) and hmac.compare_digest(
            server_key, base64.b64decode(server)
        )
    if verifier.startswith("md5"):
        return hmac.compare_digest(verifier, "md5" + hashlib.md5((password + role).encode()).hexdigest())
    return False
