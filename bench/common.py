"""What the benchmark scripts share: output formatting, timing whole pgaasctl commands, spec dirs, and
LocalBench, a throwaway workspace of local pairs (used by provision.py, failover.py and discovery.py).

Not a benchmark itself. The scripts put the repository root on sys.path and import this as bench.common,
so each one still runs as `.venv/bin/python bench/NAME.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADDRESSES = "127.0.3.10-127.0.3.250"  # benches stay inside 127.0.3.0/24
COMMAND_TIMEOUT = 300.0
TUNED_FAILOVER = {"monitor_interval": "1s", "reconnect_attempts": 3, "reconnect_interval": "1s", "connect_timeout": "2s"}
# repmgr's own defaults (monitor_interval_secs=2, reconnect_attempts=6, reconnect_interval=10); connect_timeout is ours
REPMGR_DEFAULT_FAILOVER = {"monitor_interval": "2s", "reconnect_attempts": 6, "reconnect_interval": "10s", "connect_timeout": "2s"}


class Failure(Exception):
    """pgaasctl did something wrong (not: was slow)."""


# ---------------------------------------------------------------- output

def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def machine() -> str:
    """'2 CPUs, load average ...', for a bench's first line."""
    return f"{os.cpu_count()} CPUs, {load_average()}"


def print_done() -> None:
    print(f"done; {load_average()} (other work on this machine inflates every figure)")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def median_runs(values: list[float], note: str = "") -> str:
    """'median 1.23 s<note> [1.20, 1.23, 1.31]': the median of a figure's runs, then every run."""
    return f"median {fmt(statistics.median(values))}{note} [{runs_text(values)}]"


# ---------------------------------------------------------------- running pgaasctl

def pgaasctl_command() -> list[str]:
    script = Path(sys.executable).parent / "pgaasctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("pgaasctl")
    return [found] if found else [sys.executable, "-m", "pgaasctl.cli"]


def pgaasctl_env() -> dict[str, str]:
    """This process's environment for pgaasctl commands: no PGAASCTL_STORE, wide output, the working tree's code."""
    env = dict(os.environ)
    env.pop("PGAASCTL_STORE", None)
    env["COLUMNS"] = "200"
    # The working tree's code, whatever the venv's (editable) install maps: a stale install may miss a package.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def compile_sources() -> None:
    """Bytecode for pgaasctl's modules, as `make setup` writes it: where PYTHONDONTWRITEBYTECODE is set, a module
    changed since would be compiled anew by every command measured."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pgaasctl", "providers"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, check=False)


def timed_run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command to its end (no stdin, output captured); returns (wall-clock seconds, the finished process)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc


def startup_times(cli: list[str], cwd: Path, env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock times of `pgaasctl --help` (interpreter and imports): the floor under every figure."""
    times = []
    for _ in range(runs):
        elapsed, proc = timed_run([*cli, "--help"], cwd, env)
        times.append(elapsed)
        if proc.returncode != 0:
            raise Failure(f"`pgaasctl --help` exited {proc.returncode}:\n{tail(proc.stderr)}")
    return times


def write_spec_dir(path: Path, files: dict[str, str]) -> Path:
    """A spec directory holding `files` (file name -> text)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


# ---------------------------------------------------------------- local pairs

def pair_doc(name: str, failover: dict[str, Any], replication: str = "synchronous") -> str:
    block = ", ".join(f"{k}: {v}" for k, v in failover.items())
    return (
        "kind: Pair\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  provider: local\n"
        f"  replication: {replication}\n"
        f"  nodes: [{{name: {name}-a}}, {{name: {name}-b}}]\n"
        "  deletion_protection: false\n"
        f"  failover: {{{block}}}\n"
    )


@dataclass
class Timed:
    elapsed: float
    proc: subprocess.CompletedProcess[str]
    events: list[tuple[float, str]]  # (seconds since start, output line) as the lines arrived (stdout and stderr)


class LocalBench:
    """A throwaway workspace of local pairs: specs and SQLite store in a temp dir, node files in /dev/shm.

    cleanup() destroys what the specs hold (pgaasctl destroy), then kills any process still running from
    local_dir and removes both directories; it records what destroy left behind, report_leftovers() prints it.
    """

    def __init__(self, tag: str, addresses: str = ADDRESSES, subnet: str | None = None) -> None:
        if os.geteuid() != 0:
            raise SystemExit("run as root: provider local runs PostgreSQL as the postgres OS user (see make demo)")
        self.local_dir = Path(tempfile.mkdtemp(prefix=f"pgaasctl-bench-{tag}-", dir="/dev/shm"))
        os.chmod(self.local_dir, 0o755)  # the postgres OS user traverses it
        self.work = Path(tempfile.mkdtemp(prefix=f"pgaasctl-bench-{tag}-ws-"))
        self.store = self.work / "pgaasctl.db"
        self.addresses = addresses
        self.subnet = subnet  # set: the namespace network on this subnet; else loopback addresses
        self.specs = self.spec_dir("specs")
        self.cli = pgaasctl_command()
        self.env = pgaasctl_env()
        self.env["PYTHONUNBUFFERED"] = "1"
        self.leftovers: list[str] = []
        # a plain `kill` of the bench still cleans up: SystemExit runs the callers' finally blocks
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def workspace_doc(self) -> str:
        network = f"network: namespaces, subnet: {self.subnet}" if self.subnet else "network: loopback"
        return ("kind: Workspace\n"
                f"spec: {{local_dir: {self.local_dir}, local_addresses: {self.addresses}, {network}, "
                f"store: 'sqlite:///{self.store}'}}\n")

    def spec_dir(self, name: str) -> Path:
        """A new spec directory in the workspace, holding the Workspace document (same store, same local_dir)."""
        return write_spec_dir(self.work / name, {"workspace.yaml": self.workspace_doc()})

    def write_pair(self, name: str, failover: dict[str, Any] = TUNED_FAILOVER, replication: str = "synchronous",
                   specs: Path | None = None) -> None:
        (specs or self.specs).joinpath(f"pair-{name}.yaml").write_text(pair_doc(name, failover, replication))

    def pgaasctl(self, args: list[str], expect: tuple[int, ...] = (0,), specs: Path | None = None,
                 timeout: float = COMMAND_TIMEOUT) -> Timed:
        """One whole pgaasctl command in a fresh process (path argument appended), stderr lines time-stamped."""
        argv = [*self.cli, *args, str(specs or self.specs)]
        events: list[tuple[float, str]] = []
        chunks: dict[str, list[str]] = {"out": [], "err": []}
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

        def read(stream: Any, key: str) -> None:
            for line in stream:
                events.append((time.perf_counter() - start, line.rstrip("\n")))
                chunks[key].append(line)

        readers = [threading.Thread(target=read, args=(proc.stdout, "out"), daemon=True),
                   threading.Thread(target=read, args=(proc.stderr, "err"), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise Failure(f"`pgaasctl {' '.join(args)}` did not finish in {timeout:.0f} s") from None
        elapsed = time.perf_counter() - start
        for reader in readers:
            reader.join(timeout=10)
        events.sort()
        done = subprocess.CompletedProcess(argv, proc.returncode, "".join(chunks["out"]), "".join(chunks["err"]))
        if done.returncode not in expect:
            raise Failure(f"`pgaasctl {' '.join(args)}` exited {done.returncode} (expected {expect}):\n"
                          f"{tail(done.stdout)}\n{tail(done.stderr)}")
        return Timed(elapsed, done, events)

    def apply(self, specs: Path | None = None) -> Timed:
        return self.pgaasctl(["apply", "--auto-approve"], specs=specs)

    def destroy(self, specs: Path | None = None) -> Timed:
        return self.pgaasctl(["destroy", "--auto-approve"], specs=specs)

    def plan_is_empty(self, specs: Path | None = None) -> tuple[float, bool, str]:
        timed = self.pgaasctl(["plan", "--detailed-exitcode"], expect=(0, 2), specs=specs)
        return timed.elapsed, timed.proc.returncode == 0, timed.proc.stdout

    def status(self) -> list[dict[str, Any]]:
        # status exits 0 healthy, 2 degraded (a failover under way), 1 when a pair could not be read: JSON either way
        return json.loads(self.pgaasctl(["status", "--json"], expect=(0, 1, 2)).proc.stdout)

    def uri(self, pair: str) -> str:
        return self.pgaasctl(["connection", pair, "--database", "postgres", "--role", "postgres"]).proc.stdout.strip()

    def admin_password(self, pair: str) -> str:
        return (self.local_dir / pair / "admin-password").read_text().strip()

    def node_dir(self, pair: str, node: str) -> Path:
        return self.local_dir / pair / node

    def running_processes(self) -> list[str]:
        found = subprocess.run(["pgrep", "-a", "-f", f"{self.local_dir}/"], capture_output=True, text=True, check=False)
        return [line for line in found.stdout.splitlines() if line.strip()]

    def node_dirs(self) -> list[str]:
        return sorted(str(p.relative_to(self.local_dir)) for p in self.local_dir.glob("*/*") if p.is_dir())

    def cleanup(self) -> None:
        """Destroy, then make sure: kill what still runs from local_dir, remove local_dir and the workspace."""
        # a second SIGTERM (`timeout` passes its own on to us) must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if any(self.specs.glob("pair-*.yaml")) and self.store.exists():
                try:
                    self.destroy()
                except Failure as exc:
                    self.leftovers.append(f"cleanup destroy failed: {tail(str(exc), 10)}")
            procs = self.running_processes()
            if procs:
                self.leftovers.append(f"{len(procs)} process(es) still running from {self.local_dir} after destroy: "
                                      + "; ".join(procs[:5]))
            dirs = self.node_dirs()
            if dirs:
                self.leftovers.append(f"node directories left after destroy: {', '.join(dirs[:10])}")
        finally:
            subprocess.run(["pkill", "-KILL", "-f", f"{self.local_dir}/"], check=False, capture_output=True)
            deadline = time.monotonic() + 10
            while self.running_processes() and time.monotonic() < deadline:
                time.sleep(0.1)  # polling for killed processes to exit
            shutil.rmtree(self.local_dir, ignore_errors=True)
            shutil.rmtree(self.work, ignore_errors=True)

    def report_leftovers(self) -> int:
        """Print what cleanup() found left behind; 1 if anything (pgaasctl misbehaved), else 0."""
        for item in self.leftovers:
            print(f"LEFT BEHIND: {item}")
        return 1 if self.leftovers else 0
