"""What saves a plan the PBKDF2 of every managed password: a memory of (role, password, verifier) triples that
were checked to match, kept in the store as keyed digests.

A plan compares each role's password in the spec with the server's SCRAM verifier; that costs PBKDF2 (4096 rounds,
about 0.5 ms) per role. After an apply, the store keeps, per role, HMAC(K, address, password, verifier) of the
password it set or checked and the verifier the server then held. The next plan computes the same digest from
the spec's password and the verifier it reads: equal, the server still holds what was checked against this very
password, and no PBKDF2 is needed. Anything else (a password changed on the server by anyone: another verifier;
a password changed in the spec: another digest) misses, and gets the full check.

K is 32 random bytes in a file of its own (Workspace secrets_dir, 0600), never in the store: from the store alone
nothing can be tested against a password guess. Whoever has K and a server's verifier could test guesses faster
than PBKDF2 allows, but K lives on the control machine beside the very secrets (environment, files) the specs
name. A machine with another K (or none) just misses, and checks in full.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from pgaasctl.store import Store
from providers.secrets_files import generated_secret

KEY_FILE = "password-checks.key"


def _key(secrets_dir: str, create: bool) -> bytes | None:
    text = generated_secret(Path(secrets_dir) / KEY_FILE, Path(secrets_dir), create, "the password checks' key")
    return text.encode() if text else None


def digest(key: bytes, address: str, password: str, verifier: str) -> str:
    message = b"\0".join(part.encode() for part in (address, password, verifier))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class PasswordMemory:
    """The remembered checks of one pair's roles, as the plan reads them."""

    def __init__(self, pair: str, key: bytes | None, known: dict[str, str]) -> None:
        self.pair, self.key, self.known = pair, key, known

    @classmethod
    def load(cls, secrets_dir: str, store: Store, pair: str) -> PasswordMemory:
        return cls(pair, _key(secrets_dir, create=False), store.password_checks(pair))

    def remembers(self, role: str, password: str, verifier: str | None) -> bool:
        """Whether this password was checked against this very verifier (a SCRAM one) before."""
        if self.key is None or not verifier or not verifier.startswith("SCRAM-SHA-256$"):
            return False
        known = self.known.get(f"role.{self.pair}.{role}")
        return known is not None and hmac.compare_digest(known, digest(self.key, f"role.{self.pair}.{role}",
                                                                       password, verifier))


def remember(secrets_dir: str, store: Store, pair: str, checked: dict[str, tuple[str, str]]) -> None:
    """Keep the digests of role -> (password, the SCRAM verifier the server now holds for it)."""
    if not checked:
        return
    key = _key(secrets_dir, create=True)
    assert key is not None
    store.record_password_checks(pair, {f"role.{pair}.{role}": digest(key, f"role.{pair}.{role}", password, verifier)
                                        for role, (password, verifier) in checked.items()})
