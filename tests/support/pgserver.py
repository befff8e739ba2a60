"""A throwaway PostgreSQL 15 server for the test suite.

One ``PgServer`` is one data directory under ``base_dir`` and one postmaster
listening on a single loopback address (127.0.0.2 ... 127.0.0.254 all work as
separate hosts on this machine), on a free port, with its unix socket in
``base_dir/run`` (outside the data directory, so that ``pg_basebackup`` does
not copy the socket lock file).

PostgreSQL refuses to run as root: when the suite runs as root, the server
files belong to the ``postgres`` OS user and every server command runs via
``runuser -u postgres --``.

Nothing here sleeps to synchronise: ``pg_ctl -w`` waits for start and stop,
and everything else polls with a deadline.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVER_OS_USER = "postgres"
ADMIN_USER = "postgres"

_START_ATTEMPTS = 3  # a free port can be taken between probing and binding
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 30


class PgServerError(RuntimeError):
    """The test server could not be started, stopped or reset."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def make_base_dir(prefix: str = "pgserver-", parent: str | Path | None = None) -> Path:
    """A fresh 0755 directory that the server's OS user can reach.

    By default under ``/dev/shm`` (tmpfs) when there is one: creating a file
    on this machine's ext4 root costs ~1 ms, so ``CREATE DATABASE`` (some 300
    files) takes ~250 ms under ``/tmp`` and ~15 ms on tmpfs. Otherwise under
    the system temp dir. Not pytest's ``tmp_path``: ``/tmp/pytest-of-root``
    is 0700, which the ``postgres`` OS user cannot traverse when the suite
    runs as root. The caller removes the directory (``shutil.rmtree``).
    """
    if parent is None:
        shm = Path("/dev/shm")
        usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and shm.stat().st_mode & stat.S_IXOTH
        parent = shm if usable else tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ..." -- comm may contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


class _Proc:
    """A process identity that survives PID reuse: pid plus start time."""

    def __init__(self, pid: int, starttime: int) -> None:
        self.pid = pid
        self.starttime = starttime

    def alive(self) -> bool:
        st = _proc_stat(self.pid)
        # A zombie has exited: whoever reaps it is not our business.
        return st is not None and st[2] == self.starttime and st[0] not in ("Z", "X")

    def kill(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _process_tree(root_pid: int) -> list[_Proc]:
    """``root_pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is None:
            continue
        children.setdefault(st[1], []).append(int(entry.name))
        starts[int(entry.name)] = st[2]
    if root_pid not in starts:
        return []
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        if pid in starts:
            out.append(_Proc(pid, starts[pid]))
        todo.extend(children.get(pid, []))
    return [p for p in out if p.alive()]


class PgServer:
    """A real PostgreSQL 15 server on one loopback address, for tests.

    >>> srv = PgServer(base_dir, host="127.0.0.2")
    >>> srv.start()
    >>> srv.execute("SELECT 1")
    [(1,)]
    >>> srv.stop()
    """

    def __init__(
        self,
        base_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        superuser_password: str = "admin-secret",
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"PgServer listens on loopback addresses only, not {host!r}")
        self.base_dir = Path(base_dir).absolute()
        self._host = host
        self._requested_port = port
        self._port: int | None = port
        self._password = superuser_password
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "run"
        self.log_file = self.base_dir / "postgres.log"
        self._postmaster: _Proc | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # -- identity -------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise PgServerError("the server has no port until start()")
        return self._port

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password(self) -> str:
        return self._password

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq conninfo for the superuser over TCP with password."""
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            dbname=dbname,
            connect_timeout=10,
        )

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def execute(self, query: Any, dbname: str = "postgres", params: Sequence[Any] | None = None) -> list[tuple]:
        """Run ``query`` in autocommit mode; return the rows of its (last) result, [] if none."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    # -- lifecycle ------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._postmaster is not None and self._postmaster.alive()

    def start(self) -> "PgServer":
        """initdb if needed, then start the postmaster and wait until it accepts connections."""
        if self.running:
            return self
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            if self._requested_port is None:
                self._port = free_port(self.host)
            self._write_config()
            error = self._start_postmaster()
            if error is None:
                if not self._atexit_registered:
                    atexit.register(self._stop_at_exit)
                    self._atexit_registered = True
                return self
            last_error = error
            if self._requested_port is not None or "could not bind" not in error:
                break
        raise PgServerError(f"could not start PostgreSQL on {self.host}:{self._port}:\n{last_error}")

    def start_standby_of(self, primary: "PgServer") -> "PgServer":
        """Make this server a streaming standby of `primary` (pg_basebackup -R), then start it."""
        if (self.data_dir / "PG_VERSION").exists():
            raise PgServerError(f"{self.data_dir} already holds a cluster")
        self._prepare_dirs()
        env = {**self._env(), "PGPASSWORD": primary.admin_password}
        argv = [
            str(PG_BIN / "pg_basebackup"), "-D", str(self.data_dir), "-R", "-c", "fast", "-X", "stream",
            "-h", primary.host, "-p", str(primary.port), "-U", primary.admin_user, "--no-sync",
        ]
        result = subprocess.run(self._as_server_user(argv), env=env, cwd=self.base_dir, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PgServerError(f"pg_basebackup failed:\n{result.stdout}{result.stderr}")
        self._password = primary.admin_password
        return self.start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and make sure none of its processes remain. Idempotent."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}")
        postmaster = self._postmaster or self._read_postmaster()
        if postmaster is None or not postmaster.alive():
            self._postmaster = None
            self._reap_popen()
            return
        tree = _process_tree(postmaster.pid)
        self._run_pg_ctl("stop", "-m", mode, "-w", "-t", str(_STOP_TIMEOUT_S))
        if postmaster.alive() and mode != "immediate":
            self._run_pg_ctl("stop", "-m", "immediate", "-w", "-t", str(_STOP_TIMEOUT_S))
        if postmaster.alive():
            postmaster.kill()
        # Backends exit once the postmaster is gone; make sure of it.
        if not _wait_until(lambda: not any(p.alive() for p in tree), _STOP_TIMEOUT_S):
            for p in tree:
                p.kill()
            _wait_until(lambda: not any(p.alive() for p in tree), 5)
        self._postmaster = None
        self._reap_popen()

    def restart(self) -> None:
        self.stop()
        self.start()

    def reset(self) -> None:
        """Back to a freshly initialised server (between tests).

        Drops every database but ``postgres``, ``template0`` and ``template1``
        (WITH (FORCE)), every role but ``postgres`` and the ``pg_*`` roles
        (REASSIGN OWNED / DROP OWNED in each remaining database first),
        database- and role-level settings, and every ALTER SYSTEM setting;
        restores the superuser password; reloads the configuration, and
        restarts the server if a reset setting needs a restart. Starts the
        server again if a test stopped it.
        """
        if not self.running:
            self.start()
        with self._admin_connect("postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            dbs = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database"
                " WHERE datname NOT IN ('postgres', 'template0', 'template1')"
            )]
            for db in dbs:
                conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(db)))
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
            roles = [r[0] for r in conn.execute(
                "SELECT rolname FROM pg_roles"
                " WHERE rolname <> %s AND rolname NOT LIKE 'pg\\_%%'"
                " ORDER BY rolname",
                (ADMIN_USER,),
            )]
        if roles:
            role_list = sql.SQL(", ").join(sql.Identifier(r) for r in roles)
            for db in ("postgres", "template1"):
                with self._admin_connect(db) as conn:
                    conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(role_list, sql.Identifier(ADMIN_USER)))
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(role_list))
        with self._admin_connect("postgres") as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            conn.execute("ALTER DATABASE postgres RESET ALL")
            conn.execute("ALTER DATABASE template1 RESET ALL")
            conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(ADMIN_USER)))
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH SUPERUSER PASSWORD {}").format(
                    sql.Identifier(ADMIN_USER), sql.Literal(self.admin_password)
                )
            )
            conn.execute("ALTER SYSTEM RESET ALL")
            before = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
            conn.execute("SELECT pg_reload_conf()")
            # The postmaster re-reads the files, then signals every backend,
            # this one included: poll until this session has the new config.
            if not _wait_until(
                lambda: conn.execute("SELECT pg_conf_load_time()").fetchone()[0] > before, 10, 0.01
            ):
                raise PgServerError(f"configuration reload not seen within 10 s\n{self._log_tail()}")
            pending = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()[0]
        if pending:
            self.restart()

    # -- internals ------------------------------------------------------

    def _start_postmaster(self) -> str | None:
        """Run the postmaster as our own child process; None once it is ready, else the error.

        Not ``pg_ctl start``: pg_ctl daemonises the postmaster, which is then
        reparented to PID 1, and PID 1 on this machine reaps orphans only
        lazily -- ``pgrep postgres`` keeps showing ``<defunct>`` postmasters for
        a second or two after every stop. As our child (via runuser, which
        waits for it) the postmaster is reaped the moment it exits.
        ``pg_ctl stop -w`` still stops it.
        """
        with open(self.log_file, "ab") as log:
            self._popen = subprocess.Popen(
                self._as_server_user([str(PG_BIN / "postgres"), "-D", str(self.data_dir)]),
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C aimed at pytest must not hit the server first
            )
        popen = self._popen

        def ready() -> bool:
            if popen.poll() is not None:
                return True  # exited: stop polling, reported below
            self._postmaster = self._read_postmaster(status="ready")
            return self._postmaster is not None and self._postmaster.pid in (popen.pid, *_children(popen.pid))

        if not _wait_until(ready, _START_TIMEOUT_S, 0.02):
            self._postmaster = None
            self._kill_popen()
            return f"not ready within {_START_TIMEOUT_S} s\n{self._log_tail()}"
        if popen.poll() is not None:
            self._postmaster = None
            self._popen = None
            return f"postgres exited with status {popen.returncode}\n{self._log_tail()}"
        return None

    def _reap_popen(self) -> None:
        """Collect our postmaster (or its runuser parent) once it has exited."""
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill_popen()
        self._popen = None

    def _kill_popen(self) -> None:
        if self._popen is None:
            return
        for p in _process_tree(self._popen.pid):
            p.kill()
        self._popen.wait(timeout=_STOP_TIMEOUT_S)
        self._popen = None

    def _admin_connect(self, dbname: str) -> psycopg.Connection:
        """Superuser over the unix socket (trust): works whatever tests did to passwords."""
        return psycopg.connect(
            make_conninfo(host=str(self.socket_dir), port=self.port, user=ADMIN_USER, dbname=dbname, connect_timeout=10),
            autocommit=True,
        )

    def _server_user(self) -> pwd.struct_passwd | None:
        return pwd.getpwnam(SERVER_OS_USER) if running_as_root() else None

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        user = self._server_user()
        if user is None:
            return
        for path in (self.base_dir, self.socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.base_dir.chmod(0o755)
        self.socket_dir.chmod(0o755)
        if self.data_dir.exists():
            for root, dirs, files in os.walk(self.data_dir):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.lchown(name, user.pw_uid, user.pw_gid)
        # The server user must be able to reach base_dir through its parents.
        for parent in self.base_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise PgServerError(
                    f"{parent} is not traversable by the {SERVER_OS_USER!r} OS user "
                    f"(mode {stat.filemode(mode)}); put base_dir under a world-traversable "
                    f"directory, e.g. tests.support.pgserver.make_base_dir()"
                )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LANG", "C.UTF-8")
        return env

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", SERVER_OS_USER, "--", *argv] if running_as_root() else argv

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_server_user(argv),
            cwd=self.base_dir,  # the server user may not be able to read the caller's cwd
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )

    def _run_pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _write_as_server_user(self, path: Path, text: str, mode: int = 0o600) -> None:
        path.write_text(text)
        path.chmod(mode)
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        pwfile = self.base_dir / "pwfile"
        self._write_as_server_user(pwfile, self.admin_password + "\n")
        try:
            result = self._run([
                str(PG_BIN / "initdb"),
                "-D", str(self.data_dir),
                "-U", ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E", "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PgServerError(f"initdb failed:\n{result.stdout}{result.stderr}")
        # Any loopback address is a "host" here: the client's source address
        # is the one it connects to (127.0.0.2 -> 127.0.0.2), not 127.0.0.1.
        self._write_as_server_user(
            self.data_dir / "pg_hba.conf",
            "# written by tests/support/pgserver.py\n"
            "local   all          all                 trust\n"
            "local   replication  all                 trust\n"
            "host    all          all  127.0.0.0/8    scram-sha-256\n"
            "host    replication  all  127.0.0.0/8    scram-sha-256\n"
            "host    all          all  ::1/128        scram-sha-256\n"
            "host    replication  all  ::1/128        scram-sha-256\n",
        )

    def _write_config(self) -> None:
        # In postgresql.conf, not postgresql.auto.conf: ALTER SYSTEM RESET ALL
        # (reset()) must not undo these.
        settings = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": 300,
            "fsync": "off",
        }
        lines = []
        for key, value in settings.items():
            if isinstance(value, str):
                value = "'" + value.replace("'", "''") + "'"
            lines.append(f"{key} = {value}")
        conf = self.data_dir / "postgresql.conf"
        marker = "# --- tests/support/pgserver.py ---\n"
        text = conf.read_text()
        text = text.split(marker, 1)[0]
        self._write_as_server_user(conf, text + marker + "\n".join(lines) + "\n")

    def _read_postmaster(self, status: str | None = None) -> _Proc | None:
        """The live postmaster named by postmaster.pid (whose 8th line is its status)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        if status is not None and (len(lines) < 8 or lines[7].strip() != status):
            return None
        st = _proc_stat(pid)
        if st is None:
            return None
        proc = _Proc(pid, st[2])
        return proc if proc.alive() else None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    def _stop_at_exit(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 -- interpreter is exiting
            pass

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgServer(host={self.host!r}, port={self._port!r}, base_dir={str(self.base_dir)!r})"


__all__ = ["PgServer", "PgServerError", "free_port", "make_base_dir", "running_as_root"]
