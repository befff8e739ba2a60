"""Resolve secret sources (env vars, files) into SecretStr; never print them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import SecretStr

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import SecretSource

MAX_SECRET_BYTES = 64 * 1024
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_FIX = "Point file: at a regular file that holds only the password."


def resolve_secret(source: SecretSource, base_dir: Path, owner: str) -> SecretStr:
    """The secret `source` points at. `owner` names what needs it, for the error message."""
    if source.env is not None:
        value = os.environ.get(source.env)
        if value is None:
            raise PgaasError(
                f"{owner}: environment variable {source.env} is not set",
                f"Export it before running pgaasctl, e.g. export {source.env}=...",
            )
        if value == "":
            raise PgaasError(f"{owner}: environment variable {source.env} is empty")
        return SecretStr(value)
    path = Path(source.file or "")
    if not path.is_absolute():
        path = base_dir / path
    return SecretStr(_read_secret_file(path, owner))


def _read_secret_file(path: Path, owner: str) -> str:
    """The file's text less one trailing newline (\\n or \\r\\n); any other carriage return is part of the secret.
    Only a small regular file is read: a FIFO would block plan and apply forever."""
    try:
        _must_be_regular(os.stat(path).st_mode, path, owner)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in after the check must not block either
    except OSError as exc:
        raise PgaasError(f"{owner}: cannot read password file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        _must_be_regular(os.fstat(fd).st_mode, path, owner)
        data = file.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise PgaasError(f"{owner}: password file {path} is larger than {MAX_SECRET_BYTES // 1024} KiB", _FIX)
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PgaasError(f"{owner}: password file {path} is not UTF-8 text", "Save it as UTF-8.") from None
    value = value.removesuffix("\n").removesuffix("\r") if value.endswith("\n") else value
    if value == "":
        raise PgaasError(f"{owner}: password file {path} is empty")
    if "\0" in value:
        raise PgaasError(f"{owner}: password file {path} contains a NUL character, which no client can send", _FIX)
    return value


def _must_be_regular(mode: int, path: Path, owner: str) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
        raise PgaasError(f"{owner}: password file {path} is {kind}, not a regular file", _FIX)
