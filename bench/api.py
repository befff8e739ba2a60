"""Benchmark: the service API (`pgaasctl serve`) over one local pair.

Prints figures; asserts nothing about speed. Exits non-zero only when the API misbehaves (a request fails, an
operation does not end DONE).

    .venv/bin/python bench/api.py [--clients 50] [--seconds 10] [--databases 20] [--creates 5]

1. Read latency: `--clients` concurrent keep-alive clients call `GET /v1/pairs/{pair}/databases` for
   `--seconds`, driven by ApacheBench (`ab`, apt package apache2-utils: C, so the clients take little of the 2
   cores the server runs on); p50, p99 and requests per second. Baseline, in the same process and under the
   same load: `GET /healthz` (no authentication, no specs read), the framework's floor.
2. Create: `POST /v1/pairs/{pair}/databases` until its operation is DONE (the database exists on both nodes of
   a synchronous pair), over `--creates` databases, and the same database made by `pgaasctl apply` of a hand-
   written document (a whole command) as the baseline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, LocalBench, machine, print_done  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int, token: str | None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body), "application/json"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None


def load(port: int, token: str | None, path: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (seconds) of every request `clients` threads made in `seconds`, and the failures."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        client = Client(port, token)
        mine: list[float] = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            status, _ = client.call("GET", path)
            mine.append(time.perf_counter() - started)
            if status != 200:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures[0]


class Load:
    def __init__(self, p50: float, p99: float, per_second: float, requests: int, failed: int) -> None:
        self.p50, self.p99, self.per_second, self.requests, self.failed = p50, p99, per_second, requests, failed

    def __str__(self) -> str:
        return (f"p50 {self.p50:.1f} ms, p99 {self.p99:.1f} ms, {self.per_second:.0f} requests/s "
                f"({self.requests} requests)")


def ab_load(port: int, token: str | None, path: str, clients: int, seconds: float) -> Load:
    """ApacheBench's figures for `clients` keep-alive clients over `seconds`."""
    argv = ["ab", "-q", "-k", "-c", str(clients), "-t", f"{seconds:g}", "-n", "1000000"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run([*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Failure(f"ab failed: {done.stderr.strip() or done.stdout[-500:]}")
    text = done.stdout

    def number(label: str) -> float:
        line = next(x for x in text.splitlines() if x.strip().startswith(label))
        return float(line.split(":", 1)[1].split()[0]) if ":" in line else float(line.split()[1])

    # ab counts a response whose length differs from the first one's as failed ("Length"): bodies here vary
    detail = next((x for x in text.splitlines() if x.strip().startswith("(Connect:")), "")
    broken = sum(int(part.split(":")[1].strip(" ,)")) for part in detail.strip("() ").split(", ")
                 if part.split(":")[0] in ("Connect", "Receive", "Exceptions")) if detail else 0
    failed = broken + (int(number("Non-2xx responses")) if "Non-2xx" in text else 0)
    return Load(p50=number("50%"), p99=number("99%"), per_second=number("Requests per second"),
                requests=int(number("Complete requests")), failed=failed)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def describe(latencies: list[float], seconds: float) -> str:
    return (f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
            f"{len(latencies) / seconds:.0f} requests/s ({len(latencies)} requests)")


def create(client: Client, pair: str, name: str) -> float:
    started = time.monotonic()
    status, operation = client.call("POST", f"/v1/pairs/{pair}/databases", {"name": name})
    if status != 202:
        raise Failure(f"create {name}: {status} {operation}")
    status, operation = client.call("GET", f"/v1/operations/{operation['id']}?wait=60s")
    if status != 200 or operation["status"] != "DONE":
        raise Failure(f"create {name}: operation {operation}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--databases", type=int, default=20)
    parser.add_argument("--creates", type=int, default=5)
    args = parser.parse_args()
    print(f"bench/api.py: {args.clients} clients for {args.seconds:g} s, {args.databases} databases, "
          f"{args.creates} creates; {machine()}")
    bench = LocalBench("api")
    server: subprocess.Popen[str] | None = None
    try:
        bench.write_pair("api", failover={})
        bench.apply()
        bench.pgaasctl(["user", "create", "ada", "--role", "admin"])
        token = bench.pgaasctl(["token", "create", "--user", "ada"]).proc.stdout.strip()
        port = free_port()
        server = subprocess.Popen([*bench.cli, "serve", str(bench.specs), "--listen", f"127.0.0.1:{port}"],
                                  env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if Client(port, None).call("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise Failure("the API server did not start")
            time.sleep(0.1)  # polling the server's port
        admin = Client(port, token)

        # 2 first: it also fills the pair with databases for 1
        made = [create(admin, "api", f"bench_{i:03d}") for i in range(max(args.creates, args.databases))]
        timed = made[:args.creates]
        (bench.specs / "by-hand.yaml").write_text("kind: Database\nmetadata: {name: by_hand, pair: api}\n")
        by_hand = bench.apply().elapsed
        print(f"  create a database, POST to operation DONE: median {statistics.median(timed):.2f} s, max "
              f"{max(timed):.2f} s ({len(timed)} runs); baseline `pgaasctl apply` of a document {by_hand:.2f} s "
              f"(a whole command): {statistics.median(timed) / by_hand:.2f} x")

        if shutil.which("ab"):
            floor = ab_load(port, None, "/healthz", args.clients, args.seconds)
            listed = ab_load(port, token, "/v1/pairs/api/databases", args.clients, args.seconds)
            if floor.failed or listed.failed:
                raise Failure(f"{floor.failed + listed.failed} request(s) failed under load")
            print(f"  GET /v1/pairs/api/databases ({len(made) + 1} databases), {args.clients} clients (ab): {listed} "
                  f"(target p99 < 50 ms)")
            print(f"  baseline GET /healthz, same load: {floor}; the databases list's p99 is "
                  f"{listed.p99 / floor.p99:.1f} x it")
        else:
            print("  (no `ab`: clients are Python threads, sharing the cores with the server)")
            floor_times, floor_failures = load(port, None, "/healthz", args.clients, args.seconds)
            listed_times, failures = load(port, token, "/v1/pairs/api/databases", args.clients, args.seconds)
            if failures or floor_failures:
                raise Failure(f"{failures + floor_failures} request(s) failed under load")
            print(f"  GET /v1/pairs/api/databases ({len(made) + 1} databases), {args.clients} clients: "
                  f"{describe(listed_times, args.seconds)} (target p99 < 50 ms)")
            print(f"  baseline GET /healthz, same load: {describe(floor_times, args.seconds)}; the databases list's "
                  f"p99 is {percentile(listed_times, 0.99) / percentile(floor_times, 0.99):.1f} x it")
    except Failure as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=60)
        bench.cleanup()
    print_done()
    return bench.report_leftovers()


if __name__ == "__main__":
    sys.exit(main())
