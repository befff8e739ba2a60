"""Benchmark: what TLS costs a pair: connection set-up, and the failover downtime clients see.

Prints figures; asserts nothing about speed. Exits non-zero when pgaasctl misbehaves (a command fails, a commit
is lost, no failover happens within the bound).

    .venv/bin/python bench/tls.py [--connections 100] [--psql 20] [--trials 3]

Two synchronous local pairs on the namespace network (subnet 10.213.251.0/24, run as root): `plain` with the
default `tls.mode: disable` (its nodes offer TLS but require nothing; libpq's default sslmode=prefer takes it) and
`secure` with `tls: {mode: verify-full}`, the same failover settings.
1. Connection set-up: psycopg connects (and closes) `--connections` times to each primary: plaintext to `plain`,
   sslmode=verify-full with the CA to `secure`; then psql runs `SELECT 1` `--psql` times to each (a process
   each, its start-up included). Medians; the ratio secure / plain.
2. Failover downtime: bench/failover.py's trial on each pair, `--trials` times (kill -9 and pg_ctl -m immediate in
   turn): a writer commits through `pgaasctl connection`'s URI (multi-host, read-write; verify-full for
   `secure`), the primary dies, downtime = first commit on the new primary - last on the old one; then `pgaasctl
   apply` rejoins the old primary and every acknowledged commit is looked for. Medians; the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TUNED_FAILOVER, Failure, LocalBench, fmt, machine, pair_doc, print_done  # noqa: E402
from bench.failover import FAILOVER_BOUND_S, create_table, roles_of, show, trial  # noqa: E402

SUBNET = "10.213.251.0/24"


def connect_times(host: str, password: str, count: int, **tls: str) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with psycopg.connect(host=host, port=5432, user="postgres", password=password, dbname="postgres",
                             connect_timeout=5, **tls):  # type: ignore[arg-type]
            pass
        times.append(time.perf_counter() - started)
    return times


def psql_times(host: str, password: str, count: int, **tls: str) -> list[float]:
    env = {**os.environ, "PGPASSWORD": password, **{f"PG{k.upper()}": v for k, v in tls.items()}}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        done = subprocess.run(["psql", "-X", "-A", "-t", "-h", host, "-U", "postgres", "-d", "postgres", "-c",
                               "SELECT 1"], env=env, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise Failure(f"psql to {host} failed: {done.stderr.strip()}")
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--psql", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    bench = LocalBench("tls", subnet=SUBNET)
    print(f"bench/tls.py: {args.connections} connections, {args.psql} psql runs, {args.trials} failovers per pair; "
          f"{machine()}", flush=True)
    status = 0
    try:
        bench.specs.joinpath("pair-plain.yaml").write_text(pair_doc("plain", TUNED_FAILOVER))
        bench.specs.joinpath("pair-secure.yaml").write_text(
            pair_doc("secure", TUNED_FAILOVER) + "  tls: {mode: verify-full}\n")
        created = bench.apply()
        print(f"  two pairs created in {fmt(created.elapsed)}", flush=True)
        ca = str(next(bench.work.rglob("tls/ca.crt")))
        figures: dict[str, dict[str, list[float]]] = {}
        for pair, tls in (("plain", {"sslmode": "disable"}), ("secure", {"sslmode": "verify-full", "sslrootcert": ca})):
            roles = roles_of(bench, pair)
            host, password = roles.address[roles.primary].split(":")[0], bench.admin_password(pair)
            connect_times(host, password, 5, **tls)  # warm-up
            figures[pair] = {"psycopg": connect_times(host, password, args.connections, **tls),
                             "psql": psql_times(host, password, args.psql, **tls)}
        for tool in ("psycopg", "psql"):
            plain, secure = figures["plain"][tool], figures["secure"][tool]
            print(f"  connection set-up, {tool}: plaintext {ms(plain)}, verify-full {ms(secure)} "
                  f"({statistics.median(secure) / statistics.median(plain):.2f} x)", flush=True)

        downtimes: dict[str, list[float]] = {"plain": [], "secure": []}
        next_n = 1
        for pair in ("plain", "secure"):
            create_table(bench, pair)
            for k in range(args.trials):
                method = "kill9" if k % 2 == 0 else "pg_ctl"
                result, next_n = trial(bench, pair, f"{pair} {k + 1}", method, next_n, 0.02, FAILOVER_BOUND_S["tuned"])
                show(result)
                downtimes[pair].append(result.downtime)
                if result.failed or result.lost:
                    status = 1
        plain, secure = downtimes["plain"], downtimes["secure"]
        print(f"  failover downtime (client side, {args.trials} trials each): mode disable (sslmode prefer) median "
              f"{fmt(statistics.median(plain))}, "
              f"verify-full median {fmt(statistics.median(secure))} "
              f"({statistics.median(secure) / statistics.median(plain):.2f} x)", flush=True)
    except Failure as exc:
        print(f"FAILED: {exc}")
        status = 1
    finally:
        bench.cleanup()
        status |= bench.report_leftovers()
    print_done()
    return status


if __name__ == "__main__":
    sys.exit(main())
