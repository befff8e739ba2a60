"""Secrets pgaasctl makes for a pair and keeps on this machine (0600), never in the store: the superuser password
and the SSH key of the pair's hosts. The directory that holds them gets a .gitignore: it is often inside the spec
directory's git repository."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from pgaasctl.errors import PgaasError


def ignored_by_git(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# secrets pgaasctl made: never committed\n*\n")


def generated_secret(path: Path, root: Path, create: bool, owner: str) -> str | None:
    """The secret in `path`, made (URL-safe, 32 characters) when `create` and missing."""
    try:
        if not path.exists():
            if not create:
                return None
            ignored_by_git(root)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        return path.read_text().strip()
    except OSError as exc:
        raise PgaasError(f"{owner}: cannot use {path}: {exc.strerror}",
                         f"Make {root} a directory pgaasctl can write (Workspace spec).") from None


def private_key(path: Path, root: Path, create: bool) -> Path:
    """An ed25519 key pair at `path` (and path.pub), made when `create` and missing."""
    if create and not path.exists():
        ignored_by_git(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgaasctl", "-f", str(path)],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise PgaasError(f"cannot make an SSH key at {path}: {made.stderr.strip()}",
                             "Install openssh-client (ssh-keygen), or give ssh_key_file in the pair's cloud options.")
    return path
