"""Benchmark (of correctness): does the first apply of a generated spec converge? Many seeds.

The suite runs eight seeds (tests/integration/test_generated_specs.py); this runs `--seeds` of them (from
`--first`) against one PostgreSQL 15 server of its own (127.0.0.4, data in /dev/shm), resetting it between
seeds, the CLI in-process. Prints how many converged in one apply, the seeds that did not with what their next
plan still wanted, and the median apply time. Exits 1 when any seed did not converge.

    .venv/bin/python bench/generated_specs.py [--seeds 200] [--first 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, print_done  # noqa: E402
from pgaasctl.cli import app  # noqa: E402
from pgaasctl.store import open_store  # noqa: E402
from tests.integration.test_generated_specs import generated_spec  # noqa: E402
from tests.support.pgserver import PgServer, make_base_dir  # noqa: E402
from tests.support.workspace import ADMIN_PASSWORD_ENV, pair_yaml  # noqa: E402

HOST = "127.0.0.4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    base = make_base_dir("pgaasctl-bench-gen-")
    server = PgServer(base, host=HOST)
    runner = CliRunner()
    failures: list[tuple[int, str]] = []
    times: list[float] = []
    try:
        server.start()
        os.environ[ADMIN_PASSWORD_ENV] = server.admin_password
        print(f"generated specs: seeds {args.first}..{args.first + args.seeds - 1} against {server.host}:"
              f"{server.port}; {machine()}", flush=True)
        for seed in range(args.first, args.first + args.seeds):
            server.reset()
            work = Path(tempfile.mkdtemp(prefix="pgaasctl-bench-gen-ws-"))
            try:
                specs = work / "specs"
                specs.mkdir()
                (specs / "pair.yaml").write_text(pair_yaml(server))
                (specs / "generated.yaml").write_text(yaml.safe_dump_all(generated_spec(seed), sort_keys=False))
                store = "sqlite:///" + str(work / "pgaasctl.db")
                open_store(store).close()
                env = {"PGAASCTL_STORE": store}
                started = time.perf_counter()
                applied = runner.invoke(app, ["apply", str(specs), "--auto-approve"], env=env)
                times.append(time.perf_counter() - started)
                if applied.exit_code != 0:
                    failures.append((seed, "apply failed: " + (applied.stdout + applied.stderr).strip()[-400:]))
                    continue
                replan = runner.invoke(app, ["plan", str(specs), "--detailed-exitcode"], env=env)
                if replan.exit_code != 0:
                    wanted = [line.strip() for line in replan.stdout.splitlines()
                              if line.startswith("  ") and "warning:" not in line]
                    failures.append((seed, "; ".join(wanted[:6])))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if (seed - args.first + 1) % 25 == 0:
                print(f"  {seed - args.first + 1} seeds, {len(failures)} not converged", flush=True)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"converged in one apply: {args.seeds - len(failures)} of {args.seeds} seeds; "
          f"apply median {statistics.median(times):.2f} s")
    for seed, why in failures[:20]:
        print(f"  seed {seed}: {why}")
    print_done()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
