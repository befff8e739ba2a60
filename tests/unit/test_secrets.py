"""Secret sources: a password file is read as bytes, kept exactly (a carriage return included), and anything that
is not a small regular UTF-8 file is a clear error naming it, never a hang or a traceback."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pgaasctl.errors import PgaasError
from pgaasctl.secrets import MAX_SECRET_BYTES, resolve_secret
from pgaasctl.spec.models import SecretSource

OWNER = "role.main.app"


def from_file(tmp_path: Path, content: bytes) -> str:
    (tmp_path / "pw").write_bytes(content)
    return resolve_secret(SecretSource(file="pw"), tmp_path, OWNER).get_secret_value()


def error_of(tmp_path: Path, name: str = "pw") -> str:
    with pytest.raises(PgaasError) as info:
        resolve_secret(SecretSource(file=name), tmp_path, OWNER)
    return str(info.value)


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"hunter2", "hunter2"),
        (b"hunter2\n", "hunter2"),
        (b"hunter2\r\n", "hunter2"),
        (b"hunter2\n\n", "hunter2\n"),  # only one trailing newline goes
        (b"a\rb", "a\rb"),  # a carriage return inside is part of the secret
        (b"a\r\nb\n", "a\r\nb"),
        (b"trailing-cr\r", "trailing-cr\r"),
        (b" spaced ", " spaced "),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_a_password_file_is_kept_exactly_but_for_one_trailing_newline(tmp_path: Path, content: bytes, secret: str):
    assert from_file(tmp_path, content) == secret


def test_a_password_file_that_is_not_utf8_names_the_file(tmp_path: Path):
    (tmp_path / "pw").write_bytes("caf\xe9".encode("latin-1"))
    message = error_of(tmp_path)
    assert f"{OWNER}: password file {tmp_path / 'pw'} is not UTF-8 text" in message
    assert "caf" not in message  # nothing of the secret is shown


def test_a_nul_in_a_password_file_is_refused(tmp_path: Path):
    (tmp_path / "pw").write_bytes(b"abc\x00def")
    assert "NUL" in error_of(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_an_empty_password_file_is_refused(tmp_path: Path, content: bytes):
    (tmp_path / "pw").write_bytes(content)
    assert "is empty" in error_of(tmp_path)


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path):
    os.mkfifo(tmp_path / "pw")
    outcome: list[str] = []

    def read() -> None:
        outcome.append(error_of(tmp_path))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "pw", "wb"):
            pass
        pytest.fail("resolve_secret blocked on a FIFO")
    assert f"password file {tmp_path / 'pw'} is a FIFO, not a regular file" in outcome[0]
    assert "Point file: at a regular file" in outcome[0]


def test_a_directory_or_a_device_is_refused(tmp_path: Path):
    (tmp_path / "dir").mkdir()
    assert "is a directory, not a regular file" in error_of(tmp_path, "dir")
    assert "is a character device, not a regular file" in error_of(tmp_path, "/dev/zero")


def test_a_symlink_to_a_regular_file_is_fine(tmp_path: Path):
    (tmp_path / "real").write_bytes(b"s3cret\n")
    (tmp_path / "pw").symlink_to(tmp_path / "real")
    assert resolve_secret(SecretSource(file="pw"), tmp_path, OWNER).get_secret_value() == "s3cret"


def test_a_huge_password_file_is_refused(tmp_path: Path):
    (tmp_path / "pw").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    message = error_of(tmp_path)
    assert f"is larger than {MAX_SECRET_BYTES // 1024} KiB" in message
    (tmp_path / "pw").write_bytes(b"x" * MAX_SECRET_BYTES)
    assert len(from_file(tmp_path, b"x" * MAX_SECRET_BYTES)) == MAX_SECRET_BYTES


def test_a_missing_or_unreadable_file_names_it(tmp_path: Path):
    assert f"cannot read password file {tmp_path / 'pw'}: No such file or directory" in error_of(tmp_path)
    if os.geteuid() != 0:  # root reads anything
        (tmp_path / "pw").write_bytes(b"x")
        (tmp_path / "pw").chmod(0)
        assert "Permission denied" in error_of(tmp_path)
