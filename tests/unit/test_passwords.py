"""SCRAM-SHA-256 and md5 verifiers, checked against an independent implementation of RFC 5802 / RFC 7677."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from pgaasctl.passwords import ITERATIONS, check_password, password_matches, scram_verifier

VERIFIER = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


def _hi(password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 section 2.2: Hi(str, salt, i) = U1 XOR U2 XOR ... XOR Ui, U1 = HMAC(str, salt + INT(1))."""
    u = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha256).digest()
    result = bytearray(u)
    for _ in range(iterations - 1):
        u = hmac.new(password, u, hashlib.sha256).digest()
        for i, byte in enumerate(u):
            result[i] ^= byte
    return bytes(result)


def expected_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """What PostgreSQL stores in pg_authid.rolpassword (SCRAM-SHA-256$iter:salt$StoredKey:ServerKey)."""
    salted = _hi(password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def test_independent_hi_agrees_with_pbkdf2():
    # guards the reference implementation itself: Hi() is PBKDF2 with HMAC-SHA-256 and dkLen = 32
    assert _hi(b"pencil", b"salt", 50) == hashlib.pbkdf2_hmac("sha256", b"pencil", b"salt", 50)


def test_verifier_format():
    verifier = scram_verifier("s3cret")
    match = VERIFIER.match(verifier)
    assert match, verifier
    assert int(match.group(1)) == ITERATIONS == 4096
    assert len(base64.b64decode(match.group(2))) == 16  # salt
    assert len(base64.b64decode(match.group(3))) == 32  # StoredKey
    assert len(base64.b64decode(match.group(4))) == 32  # ServerKey
    assert "s3cret" not in verifier


def test_each_verifier_gets_a_fresh_random_salt():
    a, b = scram_verifier("same"), scram_verifier("same")
    assert a != b
    assert VERIFIER.match(a).group(2) != VERIFIER.match(b).group(2)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("password", "salt", "iterations"),
    [
        ("pencil", b"\x00" * 16, 4096),
        ("correct horse battery staple", bytes(range(16)), 4096),
        ("pässwörd-ü", b"0123456789abcdef", 4096),
        ("x", b"salt", 1),
        ("", b"\xff" * 16, 10),
    ],
)
def test_verifier_with_a_known_salt_matches_the_rfc_computation(password: str, salt: bytes, iterations: int):
    assert scram_verifier(password, salt=salt, iterations=iterations) == expected_verifier(password, salt, iterations)


PINNED = (
    "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"
    "Y7KMtnzzL+zDqi0RtBNdAPJekq+PCg4eCcAMKDtLILQ=:c1MMj1kLUJb96FIM7IjzQUXiW2pIi8LDbQl55vL1oRo="
)


def test_verifier_with_a_known_salt_is_a_fixed_string():
    # Computed once with expected_verifier() above (RFC 5802/7677 steps with hashlib/hmac) and pinned,
    # so a change of algorithm, normalisation or layout shows up even if both implementations drift.
    assert expected_verifier("pencil", b"saltsaltsaltsalt", 4096) == PINNED
    assert scram_verifier("pencil", salt=b"saltsaltsaltsalt") == PINNED
    assert password_matches("pencil", PINNED, "anyone")


def test_password_matches_its_own_verifier():
    verifier = scram_verifier("hunter2")
    assert password_matches("hunter2", verifier, "app")
    assert not password_matches("hunter3", verifier, "app")
    assert not password_matches("Hunter2", verifier, "app")
    assert not password_matches("", verifier, "app")


def test_password_matches_a_verifier_made_elsewhere():
    verifier = expected_verifier("from-postgres", b"S" * 16, 4096)
    assert password_matches("from-postgres", verifier, "whoever")
    assert not password_matches("from-postgre", verifier, "whoever")


def test_password_matches_honours_the_iteration_count_of_the_verifier():
    verifier = expected_verifier("pw", b"salt-salt-salt-1", 5000)
    assert password_matches("pw", verifier, "r")


def test_a_verifier_with_only_the_stored_key_right_does_not_match():
    good = expected_verifier("pw", b"A" * 16, 4096)
    head, keys = good.rsplit("$", 1)
    stored, _ = keys.split(":")
    forged = f"{head}${stored}:{base64.b64encode(b'0' * 32).decode()}"
    assert not password_matches("pw", forged, "r")


def test_md5_verifiers():
    verifier = "md5" + hashlib.md5(b"secretalice").hexdigest()
    assert verifier == "md54a0a68b43b6cd5cf266fa02f196e2371"
    assert password_matches("secret", verifier, "alice")
    assert not password_matches("secret", verifier, "bob")  # the role name is the salt
    assert not password_matches("Secret", verifier, "alice")


@pytest.mark.parametrize(
    "verifier",
    [None, "", "plain-text-password", "SCRAM-SHA-256$", "SCRAM-SHA-256$4096", "SCRAM-SHA-256$abc:c2FsdA==$a:b",
     "SCRAM-SHA-256$4096:c2FsdA==$onlyonekey", "md5", "md5nothex"],
)
def test_unusable_verifiers_never_match_and_never_raise(verifier: str | None):
    assert password_matches("pw", verifier, "r") is False


# ---------------------------------------------------------------- check_password: what the plan does about it

def test_an_md5_hash_of_the_right_password_is_drift_rewritten_as_scram():
    md5 = "md5" + hashlib.md5(b"secretalice").hexdigest()
    check = check_password("secret", md5, "alice", exists=True, readable=True)
    assert check.matches is False
    assert check.md5 is True
    assert check.verifier is not None and check.verifier.startswith("SCRAM-SHA-256$")
    assert password_matches("secret", check.verifier, "alice")


def test_an_md5_hash_of_another_password_is_plain_drift():
    md5 = "md5" + hashlib.md5(b"oldalice").hexdigest()
    check = check_password("secret", md5, "alice", exists=True, readable=True)
    assert (check.matches, check.md5) == (False, False)
    assert check.verifier is not None and check.verifier.startswith("SCRAM-SHA-256$")


def test_a_scram_verifier_of_the_right_password_is_no_change():
    check = check_password("secret", scram_verifier("secret"), "alice", exists=True, readable=True)
    assert (check.matches, check.md5, check.verifier) == (True, False, None)


def test_unreadable_verifiers_are_never_drift():
    check = check_password("secret", None, "alice", exists=True, readable=False)
    assert (check.matches, check.md5, check.verifier) == (True, False, None)
