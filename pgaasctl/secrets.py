"""Resolve secret sources (env vars, files) into SecretStr; never print them."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import SecretSource


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
    try:
        value = path.read_text(encoding="utf-8").removesuffix("\n")
    except OSError as exc:
        raise PgaasError(f"{owner}: cannot read password file {path}: {exc.strerror}") from None
    if value == "":
        raise PgaasError(f"{owner}: password file {path} is empty")
    return SecretStr(value)
