"""Benchmark: time from `pgaasctl apply` to a replicating local pair, and `pgaasctl destroy`.

Prints figures; asserts nothing about speed. Exits non-zero only when pgaasctl misbehaves (a command
fails, the pair does not replicate, or destroy leaves a process or a node directory behind).

    .venv/bin/python bench/provision.py [--runs 5] [--replication synchronous]

Each run: `pgaasctl apply --auto-approve` on a spec holding one Pair of provider `local` (two nodes on
loopback addresses in 127.0.3.0/24, files under /dev/shm), the whole command in a fresh process; then,
from outside pgaasctl, the primary's pg_stat_replication is polled until the standby is `streaming`
(and `sync` for a synchronous pair): "apply -> replicating" is the time from starting apply to that.
Then `pgaasctl destroy --auto-approve`, timed, and a check that nothing of the pair is left.
The host operations apply reports on stderr are time-stamped as they arrive, to show where the time went.

Must run as root (like `make demo`): provider local runs PostgreSQL as the `postgres` OS user.

The helpers below (LocalBench and friends) are shared with bench/failover.py and bench/discovery.py.
"""

from __future__ import annotations

import argparse
import os
import re
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

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ADDRESSES = "127.0.3.10-127.0.3.250"  # benches stay inside 127.0.3.0/24
PROVISION_TARGET_S = 10.0
COMMAND_TIMEOUT = 300.0
TUNED_FAILOVER = {"monitor_interval": "1s", "reconnect_attempts": 3, "reconnect_interval": "1s", "connect_timeout": "2s"}
# repmgr's own defaults (monitor_interval_secs=2, reconnect_attempts=6, reconnect_interval=10); connect_timeout is ours
REPMGR_DEFAULT_FAILOVER = {"monitor_interval": "2s", "reconnect_attempts": 6, "reconnect_interval": "10s", "connect_timeout": "2s"}


# ---------------------------------------------------------------- small helpers (shared)

def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def pgaasctl_command() -> list[str]:
    script = Path(sys.executable).parent / "pgaasctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("pgaasctl")
    return [found] if found else [sys.executable, "-m", "pgaasctl.cli"]


class Failure(Exception):
    """pgaasctl did something wrong (not: was slow)."""


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
    local_dir and removes both directories; it reports what destroy left behind.
    """

    def __init__(self, tag: str, addresses: str = ADDRESSES) -> None:
        if os.geteuid() != 0:
            raise SystemExit("run as root: provider local runs PostgreSQL as the postgres OS user (see make demo)")
        self.local_dir = Path(tempfile.mkdtemp(prefix=f"pgaasctl-bench-{tag}-", dir="/dev/shm"))
        os.chmod(self.local_dir, 0o755)  # the postgres OS user traverses it
        self.work = Path(tempfile.mkdtemp(prefix=f"pgaasctl-bench-{tag}-ws-"))
        self.specs = self.work / "specs"
        self.specs.mkdir()
        self.store = self.work / "pgaasctl.db"
        self.addresses = addresses
        (self.specs / "workspace.yaml").write_text(self.workspace_doc())
        self.cli = pgaasctl_command()
        self.env = dict(os.environ)
        self.env.pop("PGAASCTL_STORE", None)
        self.env["COLUMNS"] = "200"
        self.env["PYTHONUNBUFFERED"] = "1"
        # The working tree's code, whatever the venv's (editable) install maps.
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.leftovers: list[str] = []
        # a plain `kill` of the bench still cleans up: SystemExit runs the callers' finally blocks
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def workspace_doc(self) -> str:
        return ("kind: Workspace\n"
                f"spec: {{local_dir: {self.local_dir}, local_addresses: {self.addresses}, "
                f"store: 'sqlite:///{self.store}'}}\n")

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
        import json
        return json.loads(self.pgaasctl(["status", "--json"]).proc.stdout)

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


def replication_rows(uri: str, password: str) -> list[tuple[str, str, str]]:
    """(application_name, state, sync_state) of the primary's walsenders."""
    with psycopg.connect(uri, password=password, autocommit=True, connect_timeout=2) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()]


def wait_replicating(uri: str, password: str, synchronous: bool, timeout: float = 60.0) -> tuple[float, list, int]:
    """Poll the primary until a standby streams (synchronously, if asked); returns (when, rows, polls)."""
    deadline = time.perf_counter() + timeout
    rows: list = []
    polls = 0
    while True:
        polls += 1
        try:
            rows = replication_rows(uri, password)
        except psycopg.Error as exc:
            rows = [("error", str(exc).strip(), "")]
        if any(state == "streaming" and (sync == "sync" or not synchronous) for _, state, sync in rows):
            return time.perf_counter(), rows, polls
        if time.perf_counter() > deadline:
            raise Failure(f"no standby {'streaming synchronously' if synchronous else 'streaming'} "
                          f"{timeout:.0f} s after apply; pg_stat_replication: {rows}")
        time.sleep(0.05)  # polling pg_stat_replication


def operation_breakdown(events: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Where a command's time went, from its output lines as they arrived: up to the plan summary
    ('Plan: ...': interpreter start, spec loading, discovery, planning), each host operation (progress
    lines 'pair P: node N: WHAT: done'), and the rest (SQL changes, waiting for the standby, exit)."""
    out: list[tuple[str, float]] = []
    previous = 0.0
    for at, line in events:
        text = line.strip()
        if text.startswith("Plan:") and not out:
            out.append(("start + discovery + plan", at))
            previous = at
        elif text.startswith("pair ") and text.endswith(": done"):
            what = text.split(": ", 1)[1].rsplit(": done", 1)[0]
            out.append((what, at - previous))
            previous = at
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replication", choices=("synchronous", "asynchronous"), default="synchronous")
    args = parser.parse_args()

    synchronous = args.replication == "synchronous"
    bench = LocalBench("provision")
    status = 0
    print(f"pgaasctl provision bench: {args.runs} runs of apply/destroy of one {args.replication} local pair "
          f"(local_dir {bench.local_dir}, addresses {ADDRESSES}); {os.cpu_count()} CPUs, {load_average()}",
          flush=True)
    apply_times, ready_times, destroy_times, waits = [], [], [], []
    breakdowns: list[list[tuple[str, float]]] = []
    try:
        bench.write_pair("prov", TUNED_FAILOVER, args.replication)
        for run in range(args.runs):
            applied = bench.apply()
            uri = bench.uri("prov")  # a pgaasctl command of its own: not counted
            polled = time.perf_counter()
            ready_at, rows, polls = wait_replicating(uri, bench.admin_password("prov"), synchronous)
            # replicating at the first poll: it was when apply returned (apply waits for the standby itself)
            extra = ready_at - polled if polls > 1 else 0.0
            ready = applied.elapsed + extra
            ops = operation_breakdown(applied.events)
            apply_times.append(applied.elapsed)
            ready_times.append(ready)
            breakdowns.append(ops)
            _, empty, plan_out = bench.plan_is_empty()
            if not empty:
                status = 1
                print(f"CORRECTNESS FAILURE: the plan right after apply is not empty:\n{tail(plan_out, 20)}", flush=True)
            destroyed = bench.destroy()
            destroy_times.append(destroyed.elapsed)
            left = bench.running_processes() + bench.node_dirs()
            if left:
                status = 1
                print(f"CORRECTNESS FAILURE: destroy left behind: {left[:5]}", flush=True)
            standby = ", ".join(f"{a} {s}/{y}" for a, s, y in rows)
            when = "already when apply returned" if polls == 1 else f"{extra:.2f} s after apply returned"
            print(f"  run {run + 1}: apply {fmt(applied.elapsed)}, apply -> replicating {fmt(ready)} ({standby}, {when}); "
                  f"destroy {fmt(destroyed.elapsed)}", flush=True)
            rest = applied.elapsed - sum(t for _, t in ops)
            caught_up = re.search(r"standby caught up in ([0-9.]+)s", applied.proc.stdout)
            waits.append(float(caught_up.group(1)) if caught_up else float("nan"))
            print("    " + "; ".join(f"{what} {t:.2f}" for what, t in ops) + f"; the rest {rest:.2f}"
                  + (f" (of which apply's standby wait {caught_up.group(1)} s)" if caught_up else ""), flush=True)
        median = statistics.median(ready_times)
        verdict = "met" if median < PROVISION_TARGET_S else "MISSED"
        print(f"apply -> replicating pair ({args.replication}): median {fmt(median)} over {args.runs} runs "
              f"(target < {PROVISION_TARGET_S:.0f} s: {verdict}) [{runs_text(ready_times)}]")
        print(f"apply command alone: median {fmt(statistics.median(apply_times))} [{runs_text(apply_times)}]")
        print(f"destroy: median {fmt(statistics.median(destroy_times))} [{runs_text(destroy_times)}]")
        # per-operation medians, in the order apply runs them
        names = [what for what, _ in breakdowns[0]]
        parts = []
        for i, what in enumerate(names):
            values = [b[i][1] for b in breakdowns if len(b) > i and b[i][0] == what]
            parts.append(f"{what}: {statistics.median(values):.2f} s")
        rests = [a - sum(t for _, t in b) for a, b in zip(apply_times, breakdowns)]
        parts.append(f"the rest (discovery again, SQL changes, standby wait, exit): {statistics.median(rests):.2f} s, "
                     f"of which apply's standby wait {statistics.median(waits):.2f} s")
        print("where apply's time goes (median per host operation, measured between progress lines):")
        for part in parts:
            print(f"  {part}")
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        status = 1
    finally:
        bench.cleanup()
        for item in bench.leftovers:
            print(f"LEFT BEHIND: {item}")
            status = 1
    print(f"done; {load_average()} (other work on this machine inflates every figure)")
    return status


if __name__ == "__main__":
    sys.exit(main())
