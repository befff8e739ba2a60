"""A new data directory copied from a cached initdb, each copy given an identity of its own.

initdb costs about 0.6 CPU-seconds, the largest part of making a pair's primary. Where one machine holds many
nodes (provider local), pgaasctl runs initdb once per PostgreSQL build and options into a cache on the host and
copies that. A copy must not share the cached cluster's identity: backup and rewind tools tell clusters apart by
the system identifier, and the mock authentication nonce keeps each server's fake SCRAM salts its own. So the
cache keeps its pg_control apart (no copy ever holds it), pgaasctl writes each copy a pg_control with a new
system identifier and nonce, and pg_resetwal then writes the copy's first WAL under that identifier. This is
what PostgreSQL's own pg_createsubscriber does to give a cloned cluster a new identity.
"""

from __future__ import annotations

import secrets
import shlex
import struct
import time

from pgaasctl.errors import PgaasError

# The same as a fresh initdb run on each node: the superuser is named postgres and gets its password after start.
INITDB_ARGUMENTS = "-U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256"
NONCE_LENGTH = 32  # MOCK_AUTH_NONCE_LEN: the last field of pg_control before its CRC
LOCK_FILE = ".lock"  # shared while copying, exclusive while making or removing the cache
CONTROL_SCAN = 1024  # pg_control's fields end well before this (296 bytes in PostgreSQL 15)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum PostgreSQL keeps over pg_control."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc_offset(control: bytes) -> int:
    """Where pg_control's CRC is: the one offset whose 4 bytes are the CRC of everything before them (one pass:
    the running CRC is compared at every 4-byte boundary)."""
    found = []
    crc = 0xFFFFFFFF
    for n in range(min(len(control) - 4, CONTROL_SCAN)):
        if n % 4 == 0 and n >= NONCE_LENGTH + 8 and crc ^ 0xFFFFFFFF == struct.unpack_from("<I", control, n)[0]:
            found.append(n)
        crc = _CRC32C[(crc ^ control[n]) & 0xFF] ^ (crc >> 8)
    if len(found) != 1:
        raise PgaasError("the cached initdb's pg_control is not one pgaasctl can read",
                         "Delete the host's initdb cache directory; the next apply runs initdb again.")
    return found[0]


def new_system_identifier(now_ns: int | None = None) -> int:
    """Made as initdb makes it (seconds, microseconds), with 12 random bits where initdb puts its process id."""
    micros = (now_ns if now_ns is not None else time.time_ns()) // 1000
    return ((micros // 1_000_000) << 32) | ((micros % 1_000_000) << 12) | secrets.randbits(12)


def with_new_identity(control: bytes) -> tuple[bytes, int]:
    """`control` (the cached pg_control) with a new system identifier and mock authentication nonce, its CRC
    made again; and the new identifier."""
    end = crc_offset(control)
    system_identifier = new_system_identifier()
    out = bytearray(control)
    struct.pack_into("<Q", out, 0, system_identifier)  # the first field of pg_control
    out[end - NONCE_LENGTH:end] = secrets.token_bytes(NONCE_LENGTH)
    struct.pack_into("<I", out, end, crc32c(bytes(out[:end])))
    return bytes(out), system_identifier


def copy_script(bin_dir: str, cache_dir: str, data_dir: str, options: str) -> str:
    """A shell script run on the host: makes the cached initdb for this build and these options when missing
    (atomically: concurrent applies may race), copies it into the empty `data_dir`, and prints the cached
    directory (its pg_control is there, beside the data). Refuses a data directory that is not empty, as initdb
    does."""
    q = shlex.quote
    build = f'$(stat -L -c "%s.%Y.%i" {q(bin_dir)}/initdb {q(bin_dir)}/postgres)'
    return "\n".join([
        "set -eu",
        f"data={q(data_dir)}",
        'if [ -n "$(ls -A "$data")" ]; then echo "data directory $data is not empty" >&2; exit 1; fi',
        f'key=$(printf "%s %s %s" "{build}" {q(INITDB_ARGUMENTS)} {q(options)} | md5sum | cut -c1-16)',
        f'cached={q(cache_dir)}/"$key"',
        f"exec 9>>{q(cache_dir)}/{LOCK_FILE}",
        "flock -s 9  # copies go side by side; removing the cache (destroy of the last pair) waits for none",
        'if [ ! -f "$cached/pg_control" ]; then',
        "  flock 9  # one initdb for the pairs an apply makes at once; the others wait, then copy",
        '  if [ ! -f "$cached/pg_control" ]; then',
        f'    making=$(mktemp -d {q(cache_dir)}/.making.XXXXXX)',
        '    trap \'rm -rf "$making"\' EXIT',
        f'    {q(bin_dir)}/initdb -D "$making/data" {INITDB_ARGUMENTS} {options} --no-instructions >/dev/null',
        '    mv "$making/data/global/pg_control" "$making/pg_control"',
        '    rm -f "$making"/data/pg_wal/0*  # each copy gets its first WAL from pg_resetwal',
        '    mv -T "$making" "$cached"  # in one step: a copy never sees half a cache',
        "  fi",
        "  flock -s 9",
        "fi",
        'test -f "$cached/pg_control"',
        'cp -a "$cached/data/." "$data/" || { find "$data" -mindepth 1 -delete; exit 1; }',
        'printf "%s" "$cached"',
    ])


def emptied_command(data_dir: str) -> str:
    """Removes a copy that did not get its identity, as initdb removes what it made when it fails."""
    return f"find {shlex.quote(data_dir)} -mindepth 1 -delete"


def reset_command(bin_dir: str, data_dir: str) -> str:
    """pg_resetwal writes the copy's first WAL under its new identity; pg_controldata shows what it holds."""
    q = shlex.quote
    # LC_ALL=C: pg_controldata's labels are translated in other locales, and check_identity reads them
    return f"{q(bin_dir)}/pg_resetwal -D {q(data_dir)} >/dev/null && LC_ALL=C {q(bin_dir)}/pg_controldata -D {q(data_dir)}"


def check_identity(controldata: str, system_identifier: int, where: str) -> None:
    """The copy's pg_control must hold the identifier pgaasctl wrote, or the copy is not used."""
    for line in controldata.splitlines():
        if line.startswith("Database system identifier:"):
            if line.split(":", 1)[1].strip() == str(system_identifier):
                return
            break
    raise PgaasError(f"{where}: the copied data directory does not hold the system identifier pgaasctl gave it",
                     "Delete the host's initdb cache directory, then apply again.")
