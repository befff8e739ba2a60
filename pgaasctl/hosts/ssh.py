"""SSH to nodes with fabric: one connection per host per command, host keys pinned in the store on first contact."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from pgaasctl.errors import ConnectionFailed, PgaasError

if TYPE_CHECKING:
    from fabric import Connection

# fabric (paramiko, invoke) is imported on first use: a tenth of a second that commands on pairs
# without SSH never pay.


class HostKeyBook(Protocol):
    def host_key(self, endpoint: str) -> str | None: ...
    def pin_host_key(self, endpoint: str, key: str) -> None: ...


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in; `label` names the node in messages."""

    host: str
    port: int
    user: str
    key_file: str
    label: str

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exited: int
    stdout: str
    stderr: str


class HostKeyChanged(Exception):
    pass


@cache
def _pinning_policy_class() -> type:
    import paramiko

    class PinnedKeys(paramiko.MissingHostKeyPolicy):
        """Trust on first use, then refuse any other key: the key is kept in the state store."""

        def __init__(self, book: HostKeyBook, target: SshTarget, lock: threading.Lock) -> None:
            self.book, self.target, self.lock = book, target, lock

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            presented = f"{key.get_name()} {key.get_base64()}"
            with self.lock:
                pinned = self.book.host_key(self.target.endpoint)
                if pinned is None:
                    self.book.pin_host_key(self.target.endpoint, presented)
                    return
            if pinned != presented:
                raise HostKeyChanged(f"{pinned.split()[0]} -> {key.get_name()}")

    return PinnedKeys


class SshSessions:
    """SSH connections reused for the whole command; close() at the end."""

    def __init__(self, book: HostKeyBook, connect_timeout: float = 5) -> None:
        self.book = book
        self.connect_timeout = connect_timeout
        self._connections: dict[tuple[str, int, str], Connection] = {}
        self._opening: dict[tuple[str, int, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._book_lock = threading.Lock()

    def _connection(self, target: SshTarget) -> Connection:
        key = (target.host, target.port, target.user)
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one thread opens a given connection; the others wait for it
            return self._open_once(key, target)

    def _open_once(self, key: tuple[str, int, str], target: SshTarget) -> Connection:
        with self._lock:
            conn = self._connections.get(key)
            if conn is None:
                from fabric import Config, Connection

                conn = Connection(
                    host=target.host, port=target.port, user=target.user, connect_timeout=self.connect_timeout,
                    config=Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}}),
                    connect_kwargs={
                        "key_filename": [target.key_file], "look_for_keys": False, "allow_agent": False,
                        "banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout,
                    },
                )
                conn.client.set_missing_host_key_policy(_pinning_policy_class()(self.book, target, self._book_lock))
                self._connections[key] = conn
        if not conn.is_connected:
            self._open(conn, target)
        return conn

    def _open(self, conn: Connection, target: SshTarget) -> None:
        import paramiko

        try:
            conn.open()
        except HostKeyChanged as exc:
            raise ConnectionFailed(
                f"{target.label}: the SSH host key of {target.endpoint} changed ({exc}); pgaasctl refuses to connect",
                f"If the host was rebuilt on purpose, forget its key: pgaasctl state forget-host-key {target.endpoint}",
            ) from None
        except paramiko.AuthenticationException:
            raise ConnectionFailed(
                f"{target.label}: SSH to {target.user}@{target.endpoint} refused the key {target.key_file}",
                "Check the ssh user and key_file, and the node's authorized_keys.",
            ) from None
        except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailed(f"{target.label}: SSH to {target.endpoint} failed: {reason}") from None
        # Small request, small reply, one after another: without TCP_NODELAY, Nagle's algorithm and the peer's
        # delayed ACK add about 40 ms to every command (measured: 48 ms -> 4 ms for `true`).
        conn.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self, target: SshTarget, command: str, timeout: float | None = 120) -> CommandResult:
        """Run `command`; a non-zero exit is returned, not raised (repmgr exits 25 when a node is down).

        On a channel of fabric's connection directly: fabric's own run() adds tens of milliseconds of IO
        threads per command, and discovery runs one command per node."""
        import paramiko

        conn = self._connection(target)
        channel = None
        try:
            channel = conn.client.get_transport().open_session(timeout=self.connect_timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            stdout = channel.makefile("rb").read().decode(errors="replace")  # outputs are small: the 2 MB
            stderr = channel.makefile_stderr("rb").read().decode(errors="replace")  # window holds stderr meanwhile
            exited = channel.recv_exit_status()
        except socket.timeout:
            raise PgaasError(f"{target.label}: `{command.split()[0]}` did not finish within {timeout:g}s") from None
        except (OSError, paramiko.SSHException, EOFError, AttributeError) as exc:
            raise ConnectionFailed(f"{target.label}: SSH to {target.endpoint} broke: {exc}") from None
        finally:
            if channel is not None:
                channel.close()
        return CommandResult(exited, stdout, stderr)

    def check(self, target: SshTarget, command: str, what: str, timeout: float | None = 300) -> str:
        """Run `command` and fail with its output when it exits non-zero."""
        result = self.run(target, command, timeout=timeout)
        if result.exited != 0:
            if result.exited == 127:
                raise PgaasError(f"{target.label}: {command.split()[0]} is not installed there ({what})")
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-8:]
            raise PgaasError(f"{target.label}: {what} failed (exit {result.exited}):\n    " + "\n    ".join(detail))
        return result.stdout

    def put_text(self, target: SshTarget, text: str, path: str, mode: int = 0o600) -> None:
        self.put_bytes(target, text.encode(), path, mode)

    def put_bytes(self, target: SshTarget, data: bytes, path: str, mode: int = 0o600) -> None:
        conn = self._connection(target)
        sftp = conn.sftp()
        with sftp.open(path, "w") as handle:
            handle.chmod(mode)  # before any content: a secret is never readable by others, even briefly
            handle.write(data)

    def read_bytes(self, target: SshTarget, path: str) -> bytes:
        conn = self._connection(target)
        with conn.sftp().open(path, "r") as handle:
            return bytes(handle.read())

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()
