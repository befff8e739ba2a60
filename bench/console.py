"""Benchmark: the web console (`pgaasctl serve`) in headless Chromium, over 10 pairs and 200 databases.

Prints figures; asserts nothing about speed. Exits non-zero only when the console misbehaves (a page fails, the
browser logs an error, or a page asks another host for something).

    .venv/bin/python bench/console.py [--pairs 10] [--databases 200] [--loads 10]

Ten throwaway PostgreSQL 15 servers on 127.0.3.200-209 (data under /dev/shm), each the one node of a pair
(provider existing), the databases spread over them and made by `pgaasctl apply`; the agent in `pgaasctl serve`
samples them all. Then Debian's Chromium (Playwright), signed in as an admin, loads the overview `--loads` times in
a fresh browser context each (a cold cache) and `--loads` times again in one context (the assets cached):
- first contentful paint (cold: headless Chromium records no paint entry for a page it shows again from its
  cache) and time to interactive (the page's scripts ran: the load event's end), medians, from the browser's own
  Navigation and Paint Timing entries;
- what the page loads: its requests and their bytes over the wire (cold), and decoded.
The baseline, measured the same way in the same run: the sign-in page (no API calls behind it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, machine, pgaasctl_command, pgaasctl_env, print_done, tail  # noqa: E402
from tests.support.pgserver import PgServer, make_base_dir  # noqa: E402

HOSTS = [f"127.0.3.{200 + i}" for i in range(10)]
ADMIN_PASSWORD_ENV = "PGAASCTL_BENCH_ADMIN_PASSWORD"
TARGET_S = 1.0
TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const resources = performance.getEntriesByType('resource');
  return {fcp: paint ? paint.startTime : null, interactive: nav.loadEventEnd, dom: nav.domInteractive,
          requests: 1 + resources.length,
          wire: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
          decoded: nav.decodedBodySize + resources.reduce((s, r) => s + r.decodedBodySize, 0)};
}"""


def pair_doc(name: str, server: PgServer) -> str:
    return (f"kind: Pair\nmetadata: {{name: {name}, labels: {{pgaas.members: '*'}}}}\nspec:\n  provider: existing\n"
            f"  deletion_protection: false\n  nodes:\n    - {{name: {name}-a, host: {server.host}, port: {server.port}, "
            f"admin_user: {server.admin_user}, admin_password: {{env: {ADMIN_PASSWORD_ENV}}}, connect_timeout: 5}}\n")


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise Failure(f"`{' '.join(argv[1:3])}` exited {done.returncode}:\n{tail(done.stdout)}\n{tail(done.stderr)}")
    return done


def session_cookie(base: str, name: str, password: str) -> str:
    """A session for `name`, from the API's sign-in (what the console's form does), for a fresh browser context."""
    request = urllib.request.Request(base + "/v1/sessions", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"name": name, "password": password}).encode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        cookie = answer.headers["set-cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


def measure(browser: Any, base: str, path: str, loads: int, session: str | None) -> dict[str, Any]:
    """Timings of `loads` cold loads (a fresh context each: nothing cached) and `loads` warm ones (one context)."""
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    errors: list[str] = []
    foreign: list[str] = []

    def context() -> tuple[Any, Any]:
        made = browser.new_context(viewport={"width": 1280, "height": 900})
        if session is not None:
            made.add_cookies([{"name": "pgaas_session", "value": session, "url": base}])
        page = made.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(base) else None)
        return made, page

    for _ in range(loads):
        made, page = context()
        page.goto(base + path, wait_until="load")
        cold.append(page.evaluate(TIMING))
        made.close()
    made, page = context()
    page.goto(base + path, wait_until="load")
    for _ in range(loads):
        page.goto("about:blank")
        page.goto(base + path, wait_until="load")
        warm.append(page.evaluate(TIMING))
    made.close()
    if errors or foreign:
        raise Failure(f"{path}: browser errors {errors[:3]}, requests to other hosts {foreign[:3]}")
    return {"cold": cold, "warm": warm}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows if r[key] is not None)


def ms(rows: list[dict[str, float]], key: str) -> str:
    """The median in ms; "n/a" where the browser recorded none (Chromium may record no paint entry on a reload)."""
    values = [r[key] for r in rows if r[key] is not None]
    return f"{statistics.median(values):.0f} ms" if values else "n/a"


def describe(name: str, figures: dict[str, Any]) -> str:
    cold, warm = figures["cold"], figures["warm"]
    return (f"  {name}: first contentful paint {ms(cold, 'fcp')} cold, "
            f"interactive {ms(cold, 'interactive')} cold / {ms(warm, 'interactive')} warm; "
            f"{cold[0]['requests']} requests, {cold[0]['wire'] / 1024:.0f} KiB over the wire cold "
            f"({cold[0]['decoded'] / 1024:.0f} KiB decoded), {median(warm, 'wire') / 1024:.1f} KiB warm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, choices=range(1, 11))
    parser.add_argument("--databases", type=int, default=200)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    print(f"bench/console.py: {args.pairs} pairs, {args.databases} databases, {args.loads} loads; {machine()}")
    base_dir = make_base_dir("pgaasctl-bench-console-")
    servers: list[PgServer] = []
    serve: subprocess.Popen[str] | None = None
    try:
        work = base_dir / "work"
        specs = work / "specs"
        specs.mkdir(parents=True)
        for i in range(args.pairs):
            server = PgServer(base_dir / f"pg{i}", host=HOSTS[i])
            server.start()
            servers.append(server)
        env = pgaasctl_env()
        env[ADMIN_PASSWORD_ENV] = servers[0].admin_password
        env["PGAASCTL_STORE"] = f"sqlite:///{work / 'store.db'}"
        for i, server in enumerate(servers):
            (specs / f"pair-p{i}.yaml").write_text(pair_doc(f"p{i}", server))
        for n in range(args.databases):
            pair = n % args.pairs
            (specs / f"db-{n:03d}.yaml").write_text(
                f"kind: Database\nmetadata: {{name: db_{n:03d}, pair: p{pair}, labels: {{pgaas.owner: ada}}}}\n")
        cli = pgaasctl_command()
        started = time.monotonic()
        run([*cli, "apply", str(specs), "--auto-approve"], env, work)
        print(f"  setup: {args.databases} databases on {args.pairs} pairs applied in {time.monotonic() - started:.1f} s")
        password = run([*cli, "user", "create", "ada", "--role", "admin", str(specs)], env, work).stdout.strip()
        port = 18480
        serve = subprocess.Popen([*cli, "serve", str(specs), "--listen", f"127.0.0.1:{port}", "--interval", "2s"],
                                 env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # polling the server until its agent has looked at every pair twice
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                    if b'"agent_rounds":2' in answer.read() or time.monotonic() > deadline:
                        break
            except OSError:
                pass
            if serve.poll() is not None:
                raise Failure(f"pgaasctl serve exited: {tail(serve.stderr.read() if serve.stderr else '')}")
            time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        chromium = shutil.which("chromium")
        if chromium is None:
            raise Failure("no chromium: `make setup` installs it")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                baseline = measure(browser, base, "/", args.loads, None)
                overview = measure(browser, base, "/", args.loads, session_cookie(base, "ada", password))
            finally:
                browser.close()
        print(describe("overview (signed in)", overview) + f" (target: interactive < {TARGET_S * 1000:.0f} ms)")
        print(describe("baseline: the sign-in page", baseline))
        print(f"  the overview's time to interactive is {median(overview['cold'], 'interactive') / median(baseline['cold'], 'interactive'):.1f} x "
              f"the sign-in page's (cold)")
    except Failure as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        if serve is not None and serve.poll() is None:
            serve.terminate()
            serve.wait(timeout=60)
        for server in servers:
            server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
    print_done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
