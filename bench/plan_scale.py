"""Benchmark: `pgaasctl plan` and `apply` at scale against a real PostgreSQL 15 server.

Prints figures; asserts nothing about speed. Exits non-zero only when pgaasctl
misbehaves (a command fails, a plan right after an apply is not empty, or an
apply opens more sessions than the Workspace allows).

    .venv/bin/python bench/plan_scale.py [--scales 2000,5000] [--runs 5] [--rounds 2]

A scale N is N roles (every login role with a password), N/10 databases and
N grants. For each scale, on a throwaway server on 127.0.0.3 (data under
/dev/shm; max_connections 300, or 100 from 5,000 roles on):

1. Writes a workspace: one Pair, the roles, databases (1 in 4 with a schema
   and pgcrypto) and grants (distinct role/database pairs; on the databases
   with a schema also schema, table and sequence privileges), spread over
   --files spec files. Every database starts with two tables and a sequence
   in `public` (copied from template1), so table grants have objects to act on.
2. `pgaasctl apply --auto-approve` from empty (timed), watching the sessions
   it holds on the server (pg_stat_activity, polled every 20 ms); then `plan
   --detailed-exitcode` --runs times, each the whole command in a fresh
   process, each of which must exit 0; `validate` (spec loading alone); and one
   plan with log_statement=all, to count what a plan sends.
3. At the first scale only: apply from empty against psql running the same
   statements (`plan --sql` of the empty server, with a real SCRAM verifier in
   place of each redacted password) in one session, --rounds alternating
   rounds, the server emptied before each.

Figures per 1,000 objects (roles + databases + grants) show whether growth is
linear. A plan that is not empty right after the apply is reported as a
CORRECTNESS FAILURE and the bench exits 1 at the end.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (
    Failure,
    compile_sources,
    fmt,
    machine,
    median_runs,
    pgaasctl_command,
    pgaasctl_env,
    print_done,
    startup_times,
    tail,
    timed_run,
    write_spec_dir,
)
from pgaasctl.passwords import scram_verifier
from tests.support.pgserver import PG_BIN, PgServer, make_base_dir
from tests.support.sessions import SessionCounter

HOST = "127.0.0.3"
ADMIN_PASSWORD_ENV = "PGAASCTL_BENCH_ADMIN_PASSWORD"
ROLE_PASSWORD_ENV = "PGAASCTL_BENCH_ROLE_PASSWORD"
ROLE_PASSWORD = "bench-role-secret"
PLAN_TARGET_S = 1.5
LARGE_PLAN_TARGET_S = 4.0
APPLY_RATIO_TARGET = 1.15


# ---------------------------------------------------------------- helpers

def psql_command() -> str:
    candidate = PG_BIN / "psql"
    return str(candidate) if candidate.exists() else (shutil.which("psql") or "psql")


class Runner:
    def __init__(self, server: PgServer, work: Path) -> None:
        self.server = server
        self.work = work
        self.cli = pgaasctl_command()
        self.psql = psql_command()
        self.env = pgaasctl_env()
        self.env[ADMIN_PASSWORD_ENV] = server.admin_password
        self.env[ROLE_PASSWORD_ENV] = ROLE_PASSWORD

    def pgaasctl(self, args: list[str], store: Path, expect: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess[str]]:
        elapsed, proc = timed_run([*self.cli, *args, "--store", f"sqlite:///{store}"], self.work, self.env)
        if proc.returncode not in expect:
            raise Failure(
                f"`pgaasctl {' '.join(args)}` exited {proc.returncode} (expected {expect}):\n"
                f"{tail(proc.stdout)}\n{tail(proc.stderr)}"
            )
        return elapsed, proc

    def validate(self, specs: Path) -> float:
        elapsed, proc = timed_run([*self.cli, "validate", str(specs)], self.work, self.env)
        if proc.returncode != 0:
            raise Failure(f"`pgaasctl validate` exited {proc.returncode}:\n{tail(proc.stdout)}\n{tail(proc.stderr)}")
        return elapsed

    def psql_script(self, script: Path) -> float:
        argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.server.host, "-p", str(self.server.port),
                "-U", self.server.admin_user, "-d", "postgres", "-f", str(script)]
        env = {k: v for k, v in self.env.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.server.admin_password
        elapsed, proc = timed_run(argv, self.work, env)
        if proc.returncode != 0:
            raise Failure(f"psql {script.name} exited {proc.returncode}:\n{tail(proc.stdout)}\n{tail(proc.stderr)}")
        return elapsed


def plan_times(runner: Runner, specs: Path, store: Path, runs: int, when: str) -> list[float] | None:
    """Times of `runs` plans with no changes; None (after printing the plan) if one is not empty."""
    times = []
    for _ in range(runs):
        elapsed, proc = runner.pgaasctl(["plan", str(specs), "--detailed-exitcode"], store, expect=(0, 2))
        if proc.returncode != 0:
            print(f"plan {when} is not empty (a correctness failure):", file=sys.stderr)
            print(tail(proc.stdout, 80), file=sys.stderr)
            return None
        times.append(elapsed)
    return times


# ---------------------------------------------------------------- spec generation

def pair_doc(server: PgServer) -> str:
    return (
        "kind: Pair\n"
        "metadata: {name: bench}\n"
        "spec:\n"
        "  provider: existing\n"
        "  deletion_protection: false\n"
        "  nodes:\n"
        f"    - {{name: bench-a, host: {server.host}, port: {server.port}, admin_user: {server.admin_user},"
        f" admin_password: {{env: {ADMIN_PASSWORD_ENV}}}, connect_timeout: 5}}\n"
    )


def group_name(i: int) -> str:
    return f"grp_{i:02d}"


def role_name(i: int) -> str:
    return f"app_{i:04d}"


def db_name(i: int) -> str:
    return f"db_{i:03d}"


def rich(db_index: int) -> bool:
    """1 database in 4 has its own schema and pgcrypto."""
    return db_index % 4 == 0


def role_docs(n_roles: int, n_groups: int) -> list[str]:
    docs = []
    for g in range(n_groups):
        docs.append(f"kind: Role\nmetadata: {{name: {group_name(g)}, pair: bench}}\nspec: {{login: false}}\n")
    for i in range(n_roles - n_groups):
        lines = [f"kind: Role\nmetadata: {{name: {role_name(i)}, pair: bench}}\nspec:\n  login: true\n"
                 f"  password: {{env: {ROLE_PASSWORD_ENV}}}\n"]
        if i % 3 == 0:
            lines.append(f"  member_of: [{group_name(i % n_groups)}]\n")
        if i % 10 == 0:
            lines.append("  settings: {statement_timeout: 30s, work_mem: 8MB}\n")
        if i % 5 == 0:
            lines.append("  connection_limit: 20\n")
        docs.append("".join(lines))
    return docs


def database_docs(n_dbs: int, n_login_roles: int) -> list[str]:
    docs = []
    for d in range(n_dbs):
        owner = role_name((d * 7) % n_login_roles)
        text = f"kind: Database\nmetadata: {{name: {db_name(d)}, pair: bench}}\nspec:\n  owner: {owner}\n"
        if rich(d):
            text += "  schemas: [app]\n  extensions: [pgcrypto]\n  settings: {statement_timeout: 60s}\n"
        docs.append(text)
    return docs


def grant_docs(n_grants: int, n_dbs: int, n_login_roles: int) -> list[str]:
    """Distinct (role, database) pairs: grant i goes to database i % n_dbs, role (i * 13 + 5) % n_login_roles."""
    seen: set[tuple[int, int]] = set()
    docs = []
    i = 0
    step = 13
    while len(docs) < n_grants:
        d = i % n_dbs
        r = (i * step + 5 + i // n_login_roles) % n_login_roles
        i += 1
        if (r, d) in seen:
            continue
        seen.add((r, d))
        privileges = "[CONNECT, TEMPORARY]" if i % 3 == 0 else "[CONNECT]"
        text = (f"kind: Grant\nmetadata: {{pair: bench}}\nspec:\n  role: {role_name(r)}\n  database: {db_name(d)}\n"
                f"  privileges: {privileges}\n")
        if rich(d) and i % 4 != 0:  # 3 in 4 grants on the databases with a schema go inside it
            text += "  schemas:\n    public: {privileges: [USAGE], tables: [SELECT]}\n"
            text += "    app: {privileges: [USAGE], tables: [SELECT, INSERT], sequences: [USAGE]"
            if i % 10 == 1:
                text += ", default_privileges: {tables: [SELECT]}"
            text += "}\n"
        docs.append(text)
    return docs


def write_workspace(specs: Path, server: PgServer, n_roles: int, n_dbs: int, n_grants: int, n_files: int) -> dict[str, int]:
    n_groups = max(1, n_roles // 100)
    roles = role_docs(n_roles, n_groups)
    n_login = n_roles - n_groups
    dbs = database_docs(n_dbs, n_login)
    grants = grant_docs(n_grants, n_dbs, n_login)
    write_spec_dir(specs, {"pair.yaml": pair_doc(server)})
    files: list[list[str]] = [[] for _ in range(n_files)]
    for kind_docs in (roles, dbs, grants):
        for i, doc in enumerate(kind_docs):
            files[i % n_files].append(doc)
    for k, docs in enumerate(files):
        (specs / f"team-{k:03d}.yaml").write_text("---\n".join(docs))
    return {
        "roles": len(roles), "databases": len(dbs), "grants": len(grants),
        "rich_databases": sum(1 for d in range(n_dbs) if rich(d)),
        "schema_grants": sum(1 for g in grants if "schemas:" in g),
        "bytes": sum(p.stat().st_size for p in specs.glob("*.yaml")),
    }


# ---------------------------------------------------------------- server-side helpers

def prepare_server(server: PgServer) -> None:
    """Objects every new database copies from template1, and a log line prefix naming application and database."""
    server.execute(
        "CREATE TABLE IF NOT EXISTS public.items (id bigserial PRIMARY KEY, name text);"
        "CREATE TABLE IF NOT EXISTS public.events (id bigint, at timestamptz, payload jsonb);"
        "CREATE SEQUENCE IF NOT EXISTS public.ticket_seq;",
        dbname="template1",
    )
    server.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %q%a@%d '")
    server.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while server.execute("SHOW log_line_prefix")[0][0] != "%m [%p] %q%a@%d ":
        if time.monotonic() > deadline:
            raise RuntimeError("log_line_prefix was not reloaded within 10 s")
        time.sleep(0.02)


STATEMENT_RE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] pgaasctl@(\S*) LOG:  (?:statement|execute [^:]*): (.*)$")


def count_plan_queries(runner: Runner, specs: Path, store: Path) -> str:
    """One plan run with log_statement=all for the admin role; what it sent, per session."""
    server = runner.server
    server.execute(f"ALTER ROLE {server.admin_user} SET log_statement = 'all'")
    try:
        offset = server.log_file.stat().st_size
        runner.pgaasctl(["plan", str(specs), "--detailed-exitcode"], store)
    finally:
        server.execute(f"ALTER ROLE {server.admin_user} RESET log_statement")
    with open(server.log_file, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    sessions: dict[str, str] = {}
    per_db: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        m = STATEMENT_RE.match(line)
        if not m:
            continue
        pid, db, _stmt = m.groups()
        sessions[pid] = db
        per_db[db] = per_db.get(db, 0) + 1
        total += 1
    if not total:
        return "one plan run: no statements found in the server log (log format not recognised)"
    admin_db = "postgres"
    admin = per_db.get(admin_db, 0)
    others = {d: n for d, n in per_db.items() if d != admin_db}
    admin_sessions = sum(1 for d in sessions.values() if d == admin_db)
    shape = ""
    if others:
        counts = sorted(set(others.values()))
        shape = f"; {sum(others.values())} in {len(others)} other databases ({'/'.join(map(str, counts))} each, one session each)"
    return (f"one plan run sent {total} SQL statements over {len(sessions)} sessions: "
            f"{admin} in {admin_db} ({admin_sessions} session{'s' if admin_sessions != 1 else ''}){shape}")


# ---------------------------------------------------------------- apply from empty vs psql

def empty_server(server: PgServer) -> None:
    """Every database and role the bench made dropped; the bench's server settings back."""
    server.reset()
    prepare_server(server)


def psql_baseline_script(runner: Runner, specs: Path, out: Path) -> tuple[Path, int]:
    """The statements an apply from empty runs, as a psql script with real verifiers (one SCRAM verifier made
    once: psql's time does not depend on which)."""
    store = runner.work / "state" / "baseline-plan.db"
    store.unlink(missing_ok=True)
    runner.pgaasctl(["init", str(specs)], store)
    _, proc = runner.pgaasctl(["plan", str(specs), "--sql"], store)
    script = proc.stdout.replace("'(sensitive)'", "'" + scram_verifier(ROLE_PASSWORD) + "'")
    statements = sum(1 for line in script.splitlines() if line and not line.startswith(("--", "\\")))
    out.write_text(script)
    return out, statements


def apply_from_empty_vs_psql(runner: Runner, specs: Path, rounds: int) -> tuple[list[float], list[float], int]:
    psql_times, apply_times = [], []
    statements = 0
    for r in range(rounds):
        empty_server(runner.server)
        script, statements = psql_baseline_script(runner, specs, runner.work / "baseline.sql")
        psql_times.append(runner.psql_script(script))
        empty_server(runner.server)
        store = runner.work / "state" / f"round-{r}.db"
        last = r == rounds - 1
        if last:  # the statements pgaasctl sends, BEGIN and COMMIT included, counted from the server's log
            runner.server.execute(f"ALTER ROLE {runner.server.admin_user} SET log_statement = 'all'")
            offset = runner.server.log_file.stat().st_size
        elapsed, _ = runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
        apply_times.append(elapsed)
        sent = ""
        if last:
            runner.server.execute(f"ALTER ROLE {runner.server.admin_user} RESET log_statement")
            with open(runner.server.log_file, "rb") as log:
                log.seek(offset)
                lines = [m for m in map(STATEMENT_RE.match, log.read().decode(errors="replace").splitlines()) if m]
            transactions = sum(1 for m in lines if m.group(3).strip().upper() in ("BEGIN", "COMMIT"))
            sent = f" (it sent {len(lines)} statements, {transactions} of them BEGIN or COMMIT)"
        print(f"  round {r + 1}: psql {fmt(psql_times[-1])} ({statements} statements), pgaasctl apply {fmt(elapsed)}"
              f"{sent}", flush=True)
    return psql_times, apply_times, statements


# ---------------------------------------------------------------- one scale

@dataclass
class ScaleFigures:
    objects: int
    plan_median: float
    apply_initial: float
    peak_sessions: int


def measure_scale(args: argparse.Namespace, n: int, first: bool) -> tuple[ScaleFigures, int]:
    """Figures of one scale; the status is 1 when pgaasctl misbehaved."""
    n_dbs, n_grants = max(1, n // 10), n
    base = make_base_dir("pgaasctl-bench-")
    work = Path(tempfile.mkdtemp(prefix="pgaasctl-bench-ws-", dir=args.workdir))
    server = PgServer(base, host=HOST)
    status = 0
    try:
        server.start()
        max_connections = 100 if n >= 5000 else 300  # the issue: 5,000 must work on a server of 100 slots
        if max_connections != 300:
            server.execute(f"ALTER SYSTEM SET max_connections = {max_connections}")
            server.restart()
        prepare_server(server)
        runner = Runner(server, work)
        specs = work / "specs"
        store = work / "state" / "pgaasctl.db"
        shape = write_workspace(specs, server, n, n_dbs, n_grants, args.files)
        what = f"{shape['roles']} roles / {shape['databases']} databases / {shape['grants']} grants"
        objects = shape["roles"] + shape["databases"] + shape["grants"]
        print(f"\n== {what}: PostgreSQL 15 on {server.host}:{server.port}, max_connections {max_connections}; "
              f"{machine()}")
        print(f"specs: {args.files + 1} files ({shape['bytes'] // 1024} KiB); {shape['roles'] - max(1, n // 100)} login "
              f"roles, each with a password; {shape['rich_databases']} databases with a schema + pgcrypto, "
              f"{shape['schema_grants']} grants with schema privileges", flush=True)

        with SessionCounter(server, interval=0.02) as watch:
            apply_initial, _ = runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
        print(f"apply from empty: {fmt(apply_initial)}; at most {watch.peak} sessions open at once "
              f"(Workspace `sessions` default 8, plus the pair's lock)", flush=True)
        if watch.peak > 20:
            print(f"FAILURE: apply held {watch.peak} sessions (more than 20)", flush=True)
            status = 1
        _, proc = runner.pgaasctl(["plan", str(specs), "--detailed-exitcode"], store, expect=(0, 2))
        if proc.returncode == 2:
            status = 1
            summary = next((line for line in proc.stdout.splitlines() if line.startswith("Plan:")), "?")
            print(f"CORRECTNESS FAILURE: the plan right after the apply is not empty ({summary.strip()})", flush=True)
            runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)

        validate_times = [runner.validate(specs) for _ in range(3)]
        print(f"validate (spec loading only, no server): {median_runs(validate_times)}", flush=True)
        plans = plan_times(runner, specs, store, args.runs, "after apply")
        if plans is None:
            return ScaleFigures(objects, 0.0, apply_initial, watch.peak), 1
        median = statistics.median(plans)
        target = PLAN_TARGET_S if n < 5000 else LARGE_PLAN_TARGET_S
        verdict = "met" if median < target else "MISSED"
        print(f"plan (no changes): {median_runs(plans, f' over {args.runs} runs (target < {target} s: {verdict})')}; "
              f"{median / objects * 1000 * 1000:.0f} ms per 1,000 objects", flush=True)
        print(f"  {count_plan_queries(runner, specs, store)}", flush=True)

        if first and args.rounds:
            print(f"apply from empty vs psql running the same statements in one session, {args.rounds} alternating "
                  f"rounds (server emptied before each):", flush=True)
            psql_t, apply_t, _ = apply_from_empty_vs_psql(runner, specs, args.rounds)
            ratio = statistics.median(apply_t) / statistics.median(psql_t)
            verdict = "met" if ratio <= APPLY_RATIO_TARGET else "MISSED"
            print(f"apply from empty: pgaasctl median {fmt(statistics.median(apply_t))}, psql median "
                  f"{fmt(statistics.median(psql_t))}, ratio {ratio:.2f}x (target <= {APPLY_RATIO_TARGET}x: {verdict})",
                  flush=True)
        return ScaleFigures(objects, median, apply_initial, watch.peak), status
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        return ScaleFigures(0, 0.0, 0.0, 0), 1
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="2000,5000", help="roles at each scale (databases: a tenth; grants: as many)")
    parser.add_argument("--files", type=int, default=50, help="spec files the documents are spread over")
    parser.add_argument("--runs", type=int, default=5, help="plan runs to take the median of")
    parser.add_argument("--rounds", type=int, default=2, help="alternating psql/apply rounds at the first scale")
    parser.add_argument("--workdir", default=None, help="parent of the temp workspaces; default: system temp dir")
    args = parser.parse_args()
    scales = [int(x) for x in args.scales.split(",") if x.strip()]
    compile_sources()
    print(f"pgaasctl bench, scales {', '.join(map(str, scales))}; {machine()}")
    startup = startup_times(pgaasctl_command(), ROOT, pgaasctl_env(), 3)
    print(f"startup (pgaasctl --help: interpreter + imports): median {fmt(statistics.median(startup))}", flush=True)
    status = 0
    figures: list[ScaleFigures] = []
    for i, n in enumerate(scales):
        result, failed = measure_scale(args, n, first=i == 0)
        figures.append(result)
        status |= failed
    if len(figures) > 1 and all(f.objects for f in figures):
        small, large = figures[0], figures[-1]
        growth = large.objects / small.objects
        print(f"\ngrowth from {small.objects} to {large.objects} objects ({growth:.1f}x): plan "
              f"{large.plan_median / small.plan_median:.2f}x, apply from empty "
              f"{large.apply_initial / small.apply_initial:.2f}x (linear: {growth:.1f}x)")
    print_done()
    return status


if __name__ == "__main__":
    sys.exit(main())
