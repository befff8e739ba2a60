"""The identity a copy of the cached initdb gets: pg_control's CRC found and made again, a new system identifier
and nonce, and a refusal of anything pgaasctl cannot read."""

from __future__ import annotations

import random
import secrets
import struct

import pytest

from pgaasctl.errors import PgaasError
from pgaasctl.hosts import initdb_cache

CRC_AT = 288  # where PostgreSQL 15 keeps it


def control_file(crc_at: int = CRC_AT) -> bytes:
    """A pg_control-like 8 kB file: fields, then the CRC of them, then zeros."""
    fields = secrets.token_bytes(crc_at)
    return fields + struct.pack("<I", initdb_cache.crc32c(fields)) + bytes(8192 - crc_at - 4)


def test_crc32c_is_castagnolis() -> None:
    assert initdb_cache.crc32c(b"123456789") == 0xE3069283
    assert initdb_cache.crc32c(b"") == 0


def test_the_crc_is_found_where_it_is() -> None:
    assert initdb_cache.crc_offset(control_file()) == CRC_AT
    assert initdb_cache.crc_offset(control_file(200)) == 200


def test_a_copy_gets_a_new_identifier_and_nonce_and_a_valid_crc() -> None:
    control = control_file()
    copied, system_identifier = initdb_cache.with_new_identity(control)
    assert len(copied) == len(control)
    assert int.from_bytes(copied[:8], "little") == system_identifier != int.from_bytes(control[:8], "little")
    nonce = slice(CRC_AT - initdb_cache.NONCE_LENGTH, CRC_AT)
    assert copied[nonce] != control[nonce]
    assert copied[8:nonce.start] == control[8:nonce.start]  # every other field as initdb made it
    assert initdb_cache.crc_offset(copied) == CRC_AT
    again, other = initdb_cache.with_new_identity(control)
    assert other != system_identifier and again[nonce] != copied[nonce]


def test_the_identifier_is_made_as_initdb_makes_it() -> None:
    now_ns = 1_790_000_000_123_456_789
    identifier = initdb_cache.new_system_identifier(now_ns)
    assert identifier >> 32 == 1_790_000_000
    assert (identifier >> 12) & 0xFFFFF == 123_456


@pytest.mark.parametrize("control", [bytes(8192), random.Random(13).randbytes(8192)], ids=["zeros", "noise"])
def test_a_file_without_one_crc_is_refused(control: bytes) -> None:
    with pytest.raises(PgaasError, match="not one pgaasctl can read"):
        initdb_cache.crc_offset(control)


def test_the_copy_must_show_the_identifier_written() -> None:
    shown = "pg_control version number:            1300\nDatabase system identifier:           42\n"
    initdb_cache.check_identity(shown, 42, "n1")
    with pytest.raises(PgaasError, match="n1: the copied data directory"):
        initdb_cache.check_identity(shown, 43, "n1")
    with pytest.raises(PgaasError):
        initdb_cache.check_identity("nothing", 42, "n1")
