"""Benchmark: `pgaasctl plan` and `apply` at scale against a real PostgreSQL 15 server.

Prints figures; asserts nothing about speed. Exits non-zero only when pgaasctl
misbehaves (a command fails, or a plan right after an apply is not empty).

    .venv/bin/python bench/plan_scale.py [--roles 2000] [--databases 200] [--grants 2000]
                                          [--runs 5] [--apply-roles 500] [--rounds 3]

What it does, on one throwaway server on 127.0.0.3 (data under /dev/shm):

1. Writes a workspace: one Pair, N roles, M databases (1 in 4 with a schema
   and pgcrypto), G grants (distinct role/database pairs; on the databases
   with a schema also schema, table and sequence privileges), spread over
   --files spec files. Every database starts with two tables and a sequence
   in `public` (copied from template1), so table grants have objects to act on.
2. `pgaasctl apply --auto-approve` once (timed), then `pgaasctl plan
   --detailed-exitcode` --runs times, each the whole command in a fresh
   process; every run must exit 0 (no changes). Also `pgaasctl validate`
   (spec loading alone), and one extra plan run with log_statement=all to
   count the SQL statements and sessions a plan uses.
3. Apply of --apply-roles new login roles (password from an env var,
   connection limit) against psql running the same statements (taken from
   `pgaasctl plan --sql`, with a real SCRAM verifier in place of the redacted
   password) in one session. Alternating, --rounds rounds, a fresh batch of
   role names each time; the psql batch is dropped after it is measured, and
   every pgaasctl round starts from a copy of the same store, so rounds are
   alike. Measured twice: in the big workspace above, and in a workspace
   holding only the Pair and the new roles (the same server, so the same
   catalog size), which separates the per-change cost from the cost of
   planning the big workspace.
4. Plan (no changes) of the big workspace plus the last round's roles, whose
   passwords are managed: shows the cost of the password drift check.

A plan that is not empty right after the initial apply is reported as a
CORRECTNESS FAILURE; the bench then converges with a second apply, goes on
measuring and exits 1 at the end.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (
    Failure,
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

HOST = "127.0.0.3"
ADMIN_PASSWORD_ENV = "PGAASCTL_BENCH_ADMIN_PASSWORD"
ROLE_PASSWORD_ENV = "PGAASCTL_BENCH_ROLE_PASSWORD"
ROLE_PASSWORD = "bench-role-secret"
PLAN_TARGET_S = 1.5
APPLY_RATIO_TARGET = 1.3


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


def new_role_docs(names: list[str]) -> str:
    return "---\n".join(
        f"kind: Role\nmetadata: {{name: {name}, pair: bench}}\n"
        f"spec: {{login: true, password: {{env: {ROLE_PASSWORD_ENV}}}, connection_limit: 10}}\n"
        for name in names
    )


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
        "CREATE TABLE public.items (id bigserial PRIMARY KEY, name text);"
        "CREATE TABLE public.events (id bigint, at timestamptz, payload jsonb);"
        "CREATE SEQUENCE public.ticket_seq;",
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


# ---------------------------------------------------------------- apply vs psql

def batch_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i:04d}" for i in range(n)]


def psql_baseline_script(runner: Runner, specs: Path, store: Path, batch_file: Path, names: list[str],
                         out: Path) -> tuple[Path, int]:
    """The statements pgaasctl would run to create `names`, as a psql script with a real password."""
    batch_file.write_text(new_role_docs(names))
    try:
        _, proc = runner.pgaasctl(["plan", str(specs), "--sql"], store)
    finally:
        batch_file.unlink()
    script = proc.stdout
    verifier = scram_verifier(ROLE_PASSWORD)
    redacted = script.count("'(sensitive)'")
    if redacted != len(names):
        raise Failure(f"plan --sql for {len(names)} new roles showed {redacted} redacted passwords:\n{tail(script)}")
    script = script.replace("'(sensitive)'", "'" + verifier + "'")
    statements = sum(1 for line in script.splitlines() if line and not line.startswith(("--", "\\")))
    out.write_text(script)
    return out, statements


def drop_roles(runner: Runner, names: list[str]) -> None:
    script = runner.work / "drop-roles.sql"
    script.write_text("".join(f'DROP ROLE "{n}";\n' for n in names))
    runner.psql_script(script)


def copy_store(source: Path, target: Path) -> Path:
    """A consistent copy of a SQLite store (WAL mode: the backup API, not a file copy)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def apply_vs_psql(runner: Runner, label: str, specs: Path, store_for_round: Callable[[int], Path], n: int,
                  rounds: int, adopt_pair: bool) -> tuple[list[float], list[float], Path]:
    """Alternate psql and pgaasctl apply creating `n` fresh roles; returns (psql times, pgaasctl times, last batch).

    Every round starts from the same spec and a store of the same content (store_for_round gives a fresh one;
    with adopt_pair, an untimed apply of the spec first adopts the Pair in it), so rounds are alike. The applied
    batch file is removed after its round (its roles stay on the server, unmanaged), except the last one's.
    """
    psql_times, apply_times = [], []
    tag = label[0]
    batch_file = specs
    for r in range(rounds):
        store = store_for_round(r)
        if adopt_pair:
            runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
        # psql: statements from plan --sql, one session; then drop the roles again
        psql_names = batch_names(f"p{tag}{r}", n)
        script, statements = psql_baseline_script(
            runner, specs, store, specs / f"zz-psql-{tag}{r}.yaml", psql_names, runner.work / f"psql-{tag}{r}.sql")
        elapsed = runner.psql_script(script)
        psql_times.append(elapsed)
        drop_roles(runner, psql_names)
        # pgaasctl: a new batch of names in the spec, whole `apply --auto-approve` command
        names = batch_names(f"a{tag}{r}", n)
        batch_file = specs / f"zz-apply-{tag}{r}.yaml"
        batch_file.write_text(new_role_docs(names))
        elapsed, proc = runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
        if f"{n} added, 0 changed, 0 destroyed" not in proc.stdout:
            raise Failure(f"apply of {n} roles did not report {n} added:\n{tail(proc.stdout)}")
        apply_times.append(elapsed)
        print(f"  {label} round {r + 1}: psql {fmt(psql_times[-1])} ({statements} statements), "
              f"pgaasctl apply {fmt(elapsed)}", flush=True)
        if r < rounds - 1:
            batch_file.unlink()
    return psql_times, apply_times, batch_file


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", type=int, default=2000)
    parser.add_argument("--databases", type=int, default=200)
    parser.add_argument("--grants", type=int, default=2000)
    parser.add_argument("--files", type=int, default=50, help="spec files the documents are spread over")
    parser.add_argument("--runs", type=int, default=5, help="plan runs to take the median of")
    parser.add_argument("--apply-roles", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="alternating psql/apply rounds")
    parser.add_argument("--workdir", default=None, help="parent of the temp workspace (specs + SQLite store); default: system temp dir")
    args = parser.parse_args()
    if args.grants > (args.roles - max(1, args.roles // 100)) * args.databases:
        parser.error("more grants than distinct (role, database) pairs")

    base = make_base_dir("pgaasctl-bench-")
    work = Path(tempfile.mkdtemp(prefix="pgaasctl-bench-ws-", dir=args.workdir))
    server = PgServer(base, host=HOST)
    status = 0
    try:
        server.start()
        prepare_server(server)
        runner = Runner(server, work)
        specs = work / "specs"
        store = work / "state" / "pgaasctl.db"
        shape = write_workspace(specs, server, args.roles, args.databases, args.grants, args.files)
        what = f"{shape['roles']} roles / {shape['databases']} databases / {shape['grants']} grants"
        print(f"pgaasctl bench: PostgreSQL 15 on {server.host}:{server.port} (data in {base}), workspace {work}; "
              f"{machine()}")
        print(f"specs: {what} in {args.files + 1} files ({shape['bytes'] // 1024} KiB); "
              f"{shape['rich_databases']} databases with a schema + pgcrypto, {shape['schema_grants']} grants with "
              f"schema privileges", flush=True)

        startup = startup_times(runner.cli, work, runner.env, 3)
        print(f"startup (pgaasctl --help: interpreter + imports): median {fmt(statistics.median(startup))}", flush=True)

        elapsed, proc = runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
        print(f"apply (initial, everything new), {what}: {fmt(elapsed)}", flush=True)
        _, proc = runner.pgaasctl(["plan", str(specs), "--detailed-exitcode"], store, expect=(0, 2))
        if proc.returncode == 2:
            # Not converged in one apply: a pgaasctl bug. Say so, converge with a second apply, go on measuring.
            status = 1
            summary = next((line for line in proc.stdout.splitlines() if line.startswith("Plan:")), "?")
            changed = sorted({line.strip() for line in proc.stdout.splitlines() if line.strip().startswith(("schemas.", "privileges"))})
            print(f"CORRECTNESS FAILURE: the plan right after the initial apply is not empty ({summary.strip()}); "
                  f"attributes: {', '.join(changed[:5])}", flush=True)
            elapsed, proc = runner.pgaasctl(["apply", str(specs), "--auto-approve"], store)
            print(f"apply (second, to converge): {fmt(elapsed)}", flush=True)

        validate_times = [runner.validate(specs) for _ in range(3)]
        print(f"validate (spec loading only, no server): "
              f"{median_runs(validate_times, f' over {len(validate_times)} runs')}", flush=True)

        plans = plan_times(runner, specs, store, args.runs, "after apply")
        if plans is None:
            return 1
        median = statistics.median(plans)
        verdict = "met" if median < PLAN_TARGET_S else "MISSED"
        print(f"plan (no changes), {what}: "
              + median_runs(plans, f" over {args.runs} runs (target < {PLAN_TARGET_S} s: {verdict})"), flush=True)
        print(f"  {count_plan_queries(runner, specs, store)}", flush=True)

        # apply of N new roles vs psql, in the big workspace, then in a workspace with only the new roles
        n = args.apply_roles
        print(f"apply of {n} new roles (login, password, connection limit) vs psql with the same statements "
              f"in one session, {args.rounds} alternating rounds:", flush=True)
        big_stores = work / "state" / "rounds"
        big_stores.mkdir()
        big_psql, big_apply, _ = apply_vs_psql(
            runner, "big workspace", specs, lambda r: copy_store(store, big_stores / f"big-{r}.db"), n, args.rounds,
            adopt_pair=False)
        last_big_store = big_stores / f"big-{args.rounds - 1}.db"
        small_specs = write_spec_dir(work / "small-specs", {"pair.yaml": pair_doc(server)})
        small_psql, small_apply, _ = apply_vs_psql(
            runner, "roles-only workspace", small_specs, lambda r: work / "state" / f"small-{r}.db", n, args.rounds,
            adopt_pair=True)
        for label, psql_t, apply_t, note in (
            ("in the big workspace", big_psql, big_apply, f"spec also holds {what}"),
            ("in a roles-only workspace", small_psql, small_apply, "spec holds the Pair and the new roles only"),
        ):
            ratio = statistics.median(apply_t) / statistics.median(psql_t)
            verdict = "met" if ratio <= APPLY_RATIO_TARGET else "MISSED"
            print(f"apply {n} new roles {label} ({note}): pgaasctl median {fmt(statistics.median(apply_t))}, "
                  f"psql median {fmt(statistics.median(psql_t))}, ratio {ratio:.2f}x "
                  f"(target <= {APPLY_RATIO_TARGET}x: {verdict})", flush=True)

        # plan again: the big workspace plus the last round's roles, whose passwords are managed (drift checked)
        after = plan_times(runner, specs, last_big_store, 3, "after the apply rounds")
        if after is None:
            return 1
        print(f"plan (no changes), {shape['roles'] + n} roles ({n} of them with a managed password) / "
              f"{shape['databases']} databases / {shape['grants']} grants: "
              f"{median_runs(after, f' over {len(after)} runs')} (vs {fmt(median)} without the {n})", flush=True)
        print_done()
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        status = 1
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
