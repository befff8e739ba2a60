"""Inputs that used to get through validation: control characters, trailing newlines, booleans as numbers,
reserved schemas, list settings that cannot round-trip, membership cycles, and files the loader skipped."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from pgaasctl.errors import SpecError
from pgaasctl.spec.desired import load_desired
from pgaasctl.spec.loader import load_path, parse_text
from pgaasctl.spec.names import identifier_problem

FILE = Path("/specs/all.yaml")

# Every kind with every string field filled in, so that each can be made hostile in turn.
FULL: list[dict[str, Any]] = [
    {"kind": "Pair", "metadata": {"name": "p"}, "spec": {
        "provider": "existing", "postgres": 15, "replication": "asynchronous",
        "settings": {"work_mem": "8MB", "search_path": '"$user", public', "myapp.key": "v"},
        "nodes": [
            {"name": "a", "host": "db1.example.com", "port": 5432, "admin_user": "postgres",
             "admin_password": {"env": "PG_PW"}, "admin_database": "postgres", "sslmode": "require",
             "connect_timeout": 3,
             "ssh": {"user": "postgres", "port": 22, "key_file": "keys/id", "repmgr_config": "/etc/repmgr.conf",
                     "bin_dir": "/usr/lib/postgresql/15/bin"}},
            {"name": "b", "host": "10.0.0.6", "admin_password": {"file": "secrets/pw"}},
        ]}},
    {"kind": "Pair", "metadata": {"name": "l"}, "spec": {
        "provider": "local", "nodes": [{"name": "l-a"}],
        "failover": {"mode": "automatic", "monitor_interval": "1s", "reconnect_interval": "2s", "connect_timeout": 2}}},
    {"kind": "Role", "metadata": {"name": "app", "pair": "p"}, "spec": {
        "login": True, "connection_limit": 5, "valid_until": "2030-01-01T00:00:00Z", "member_of": ["reader"],
        "settings": {"statement_timeout": "30s"}, "password": {"env": "APP_PW"}}},
    {"kind": "Database", "metadata": {"name": "db", "pair": "p"}, "spec": {
        "owner": "app", "encoding": "UTF8", "locale": "C.UTF-8", "template": "template0",
        "settings": {"timezone": "UTC"},
        "extensions": ["pgcrypto", {"name": "hstore", "version": "1.8", "schema": "ext"}],
        "schemas": ["ext", {"name": "billing", "owner": "app"}]}},
    {"kind": "Grant", "metadata": {"pair": "p", "name": "label"}, "spec": {
        "role": "reader", "database": "db", "privileges": ["CONNECT"],
        "schemas": {"billing": {"privileges": ["USAGE"], "tables": ["SELECT"], "sequences": ["USAGE"],
                                "functions": ["EXECUTE"],
                                "default_privileges": {"for_role": "app", "tables": ["SELECT"]}}}}},
    {"kind": "Workspace", "metadata": {"name": "ws"}, "spec": {
        "store": "sqlite:///state/x.db", "local_dir": "state/local", "local_addresses": "127.0.1.2-127.0.1.9"}},
]

# Maps whose keys are data, not field names.
FREE_KEYS = {("spec", "settings"), ("spec", "schemas")}


def parse_docs(docs: list[dict[str, Any]]) -> tuple[list, list[str]]:
    return parse_text(yaml.safe_dump_all(docs, sort_keys=False), FILE)


def strings(data: Any, loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(path, 'value' or 'key') of every string a document holds."""
    if isinstance(data, dict):
        for key, value in data.items():
            if loc in FREE_KEYS or loc[-1:] == ("settings",):
                yield loc + (key,), "key"
            yield from strings(value, loc + (key,))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from strings(item, loc + (i,))
    elif isinstance(data, str):
        yield loc, "value"


def hostile(doc: dict[str, Any], loc: tuple, where: str, bad: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    parent = out
    for part in loc[:-1]:
        parent = parent[part]
    if where == "key":
        parent[loc[-1] + bad] = parent.pop(loc[-1])
    else:
        parent[loc[-1]] = parent[loc[-1]] + bad
    return out


CASES = [(i, loc, where) for i, doc in enumerate(FULL) for loc, where in strings(doc)]


def test_the_full_documents_are_valid():
    docs, problems = parse_docs(FULL)
    assert problems == []
    assert len(docs) == len(FULL)


@pytest.mark.parametrize("bad", ["\n", "\x00", "\r", "\t", "\x1b", "\x7f"], ids=repr)
@pytest.mark.parametrize(("index", "loc", "where"), CASES, ids=[f"{FULL[i]['kind']}:{'.'.join(map(str, loc))}:{w}" for i, loc, w in CASES])
def test_a_control_character_in_any_string_is_refused_naming_the_field(index: int, loc: tuple, where: str, bad: str):
    doc = hostile(FULL[index], loc, where, bad)
    docs, problems = parse_docs([doc])
    assert docs == [], f"{loc} accepted {bad!r}"
    assert problems, loc
    field = ".".join(str(p) for p in (loc[:-1] if where == "key" else loc) if not isinstance(p, int))
    first = field.split(".")[:2]
    assert any(".".join(first) in p for p in problems), problems
    assert all("\n" not in p and "\x00" not in p for p in problems), problems  # the message itself stays one line


def test_control_character_message_says_what_and_where():
    doc = copy.deepcopy(FULL[3])
    doc["spec"]["locale"] = "C.UTF-8\n"
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert "Database 'db': spec.locale: contains a control character (U+000A)" in problems[0]


@pytest.mark.parametrize("name", ["canary\n", "canarydb\n", "sch\n", "a\x00", "tab\tbed"], ids=repr)
def test_a_trailing_newline_or_control_character_is_not_an_identifier(name: str):
    assert identifier_problem(name) is not None


@pytest.mark.parametrize(
    ("loc", "value"),
    [
        (("metadata", "name"), "canary\n"),
        (("spec", "nodes", 0, "host"), "db1\n"),
        (("spec", "nodes", 0, "ssh", "key_file"), "keys/id\n"),
        (("spec", "nodes", 0, "admin_database"), "postgres\n"),
    ],
)
def test_a_trailing_newline_is_refused_by_the_pattern_itself(loc: tuple, value: str):
    # not only by the control-character rule: the patterns must match the whole value
    from pgaasctl.spec import models

    assert models._HOST.fullmatch("db1\n") is None and models._PATH.fullmatch("x\n") is None
    assert models._SETTING_NAME.fullmatch("work_mem\n") is None
    doc = hostile(FULL[0], loc, "value", "")
    parent = doc
    for part in loc[:-1]:
        parent = parent[part]
    parent[loc[-1]] = value
    docs, problems = parse_docs([doc])
    assert docs == [] and problems


def test_a_nul_in_a_setting_value_is_a_validation_error():
    doc = copy.deepcopy(FULL[0])
    doc["spec"]["settings"]["work_mem"] = "8MB\x00; DROP"
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert "spec.settings" in problems[0] and "work_mem" in problems[0] and "U+0000" in problems[0]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("admin_user", "x; drop", "';'"),
        ("admin_user", "", "empty"),
        ("admin_database", "dbname=evil host=elsewhere", "' ' '='"),
        ("admin_database", "postgresql://evil/db", "'/' ':'"),
    ],
)
def test_admin_user_and_admin_database_are_identifiers(field: str, value: str, needle: str):
    doc = copy.deepcopy(FULL[0])
    doc["spec"]["nodes"][0][field] = value
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert f"spec.nodes.0.{field}" in problems[0] and needle in problems[0]


def test_admin_user_and_admin_database_may_be_any_existing_name():
    doc = copy.deepcopy(FULL[0])
    doc["spec"]["nodes"][0].update(admin_user="Admin-1", admin_database="pg_admin_db")
    assert parse_docs([doc])[1] == []


# ---------------------------------------------------------------- 5: never converge, converge on a wrong value

@pytest.mark.parametrize("name", ["information_schema", "INFORMATION_SCHEMA", "pg_catalog", "pg_toast", "pg_temp_3"])
def test_reserved_schemas_are_refused_in_databases_and_grants(name: str):
    db = copy.deepcopy(FULL[3])
    db["spec"]["schemas"] = [name]
    grant = copy.deepcopy(FULL[4])
    grant["spec"]["schemas"] = {name: {"privileges": ["USAGE"]}}
    ext = copy.deepcopy(FULL[3])
    ext["spec"]["schemas"] = []
    ext["spec"]["extensions"] = [{"name": "hstore", "schema": name}]
    for doc, field in ((db, "spec.schemas.0"), (grant, "spec.schemas"), (ext, "spec.extensions.0.schema")):
        _, problems = parse_docs([doc])
        assert len(problems) == 1, problems
        assert field in problems[0], problems
        assert "reserved" in problems[0] or "pg_" in problems[0], problems


def test_information_schema_message_gives_the_reason():
    db = copy.deepcopy(FULL[3])
    db["spec"]["schemas"] = ["information_schema"]
    _, problems = parse_docs([db])
    assert "information_schema is PostgreSQL's own schema" in problems[0]


@pytest.mark.parametrize("value", ['"a,b", public', 'app, "x"y"', '"unterminated, public', 'a"b'])
@pytest.mark.parametrize("setting", ["search_path", "temp_tablespaces", "shared_preload_libraries"])
def test_list_setting_items_that_cannot_round_trip_are_refused(setting: str, value: str):
    doc = copy.deepcopy(FULL[2])
    doc["spec"]["settings"] = {setting: value}
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert setting in problems[0] and "spec.settings" in problems[0]


@pytest.mark.parametrize("value", ['"$user", public', "app,public", ' "My Schema" , x ', "", "public"])
def test_list_settings_that_round_trip_are_accepted(value: str):
    doc = copy.deepcopy(FULL[2])
    doc["spec"]["settings"] = {"search_path": value}
    assert parse_docs([doc])[1] == []


def test_a_comma_or_quote_in_an_ordinary_setting_is_fine():
    doc = copy.deepcopy(FULL[2])
    doc["spec"]["settings"] = {"application_name": 'a, "b"'}
    assert parse_docs([doc])[1] == []


def test_the_list_parameters_agree_with_the_planner():
    from pgaasctl.plan import settings
    from pgaasctl.spec import models

    assert models.LIST_PARAMETERS == settings.LIST_PARAMETERS


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "0999-12-31T23:00:00+00:00", "0001-01-01T00:30:00-01:00"])
def test_valid_until_before_year_1000_is_written_with_four_digits(value: str):
    from pgaasctl.plan.diff import _role_attributes
    from pgaasctl.spec.models import RoleSpec

    written = _role_attributes(RoleSpec.model_validate({"valid_until": value}))["valid_until"]
    assert len(written.split("-")[0]) == 4, written
    assert written.endswith("Z")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"])
def test_valid_until_outside_the_representable_range_is_refused(value: str):
    doc = copy.deepcopy(FULL[2])
    doc["spec"]["valid_until"] = value
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert "valid_until" in problems[0] and "range" in problems[0]


# ---------------------------------------------------------------- 7: numbers

INT_FIELDS = [
    (2, ("spec", "connection_limit")),
    (3, ("spec", "connection_limit")),
    (0, ("spec", "nodes", 0, "port")),
    (0, ("spec", "nodes", 0, "connect_timeout")),
    (0, ("spec", "nodes", 0, "ssh", "port")),
    (1, ("spec", "failover", "reconnect_attempts")),
    (1, ("spec", "failover", "monitor_interval")),
    (1, ("spec", "failover", "connect_timeout")),
    (5, ("spec", "lock_timeout")),
    (5, ("spec", "standby_timeout")),
]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("index", "loc"), INT_FIELDS, ids=[".".join(map(str, loc)) for _, loc in INT_FIELDS])
def test_a_boolean_is_not_a_number(index: int, loc: tuple, value: bool):
    doc = copy.deepcopy(FULL[index])
    parent = doc
    for part in loc[:-1]:
        parent = parent[part] if isinstance(parent, list) else parent.setdefault(part, {})
    parent[loc[-1]] = value
    _, problems = parse_docs([doc])
    assert len(problems) == 1, problems
    assert ".".join(map(str, loc)) in problems[0]
    assert f"got {str(value).lower()}" in problems[0], problems


def test_plain_yaml_integers_are_still_numbers():
    docs, problems = parse_text("kind: Role\nmetadata: {name: r, pair: p}\nspec: {connection_limit: 7}\n"
                                "---\nkind: Workspace\nspec: {lock_timeout: 2, standby_timeout: 2.5}\n", FILE)
    assert problems == []
    assert docs[0].doc.spec.connection_limit == 7
    assert docs[1].doc.spec.lock_timeout == 2.0


@pytest.mark.parametrize("kind", ["Role", "Database"])
@pytest.mark.parametrize("limit", [2**31, 10**20])
def test_connection_limit_fits_postgresqls_int4(kind: str, limit: int):
    _, problems = parse_text(f"kind: {kind}\nmetadata: {{name: x, pair: p}}\nspec: {{connection_limit: {limit}}}\n", FILE)
    assert len(problems) == 1 and "spec.connection_limit" in problems[0] and "2147483647" in problems[0], problems
    docs, problems = parse_text(f"kind: {kind}\nmetadata: {{name: x, pair: p}}\nspec: {{connection_limit: {2**31 - 1}}}\n", FILE)
    assert problems == []


# ---------------------------------------------------------------- 7: cycles and one report

PAIR = "kind: Pair\nmetadata: {name: p}\nspec: {provider: existing, nodes: [{name: a, host: 127.0.0.1}]}\n"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_desired(path)
    return info.value.problems


def test_a_member_of_cycle_is_found_at_validation(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    roles = write(tmp_path, "roles.yaml", """\
        kind: Role
        metadata: {name: a, pair: p}
        spec: {member_of: [b]}
        ---
        kind: Role
        metadata: {name: b, pair: p}
        spec:
          member_of: [c]
        ---
        kind: Role
        metadata: {name: c, pair: p}
        spec:
          member_of:
            - a
        ---
        kind: Role
        metadata: {name: d, pair: p}
        spec: {member_of: [a]}
        """)
    problems = problems_of(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{roles}:")
    assert "member_of cycle" in problems[0] and "a -> b -> c -> a" in problems[0]


def test_a_two_role_cycle_is_reported_once(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(tmp_path, "roles.yaml", "kind: Role\nmetadata: {name: x, pair: p}\nspec: {member_of: [y]}\n---\n"
                                        "kind: Role\nmetadata: {name: y, pair: p}\nspec: {member_of: [x]}\n")
    problems = problems_of(tmp_path)
    assert problems == [f"{path}:3: role.p.x: member_of cycle x -> y -> x; remove one of these memberships"]


def test_schema_and_reference_problems_are_reported_together_sorted(tmp_path: Path):
    write(tmp_path, "a-pair.yaml", PAIR)
    b = write(tmp_path, "b.yaml", "kind: Database\nmetadata: {name: db, pair: p}\nspec: {owner: ghost}\n")
    c = write(tmp_path, "c.yaml", "kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  login: maybe\n")
    a = write(tmp_path, "a.yaml", "# first\nkind: Role\nmetadata: {name: s, pair: p}\nspec: {member_of: [nobody]}\n"
                                  "---\nkind: Role\nmetadata: {name: t, pair: p}\nspec: {conection_limit: 3}\n")
    problems = problems_of(tmp_path)
    assert [p.split(": ")[0] for p in problems] == [f"{a}:4", f"{a}:8", f"{b}:3", f"{c}:4"], problems
    assert "member_of 'nobody'" in problems[0]
    assert "unknown field" in problems[1]
    assert "owner 'ghost'" in problems[2]
    assert "spec.login" in problems[3]


def test_a_reference_to_a_document_that_failed_validation_is_not_reported_again(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "x.yaml", "kind: Role\nmetadata: {name: app, pair: p}\nspec: {login: maybe}\n---\n"
                              "kind: Database\nmetadata: {name: db, pair: p}\nspec: {owner: app}\n---\n"
                              "kind: Grant\nmetadata: {pair: p}\nspec: {role: app, database: db}\n")
    problems = problems_of(tmp_path)
    assert len(problems) == 1 and "spec.login" in problems[0], problems


def test_objects_on_a_pair_that_failed_validation_are_not_reported_again(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR.replace("host: 127.0.0.1", "host: 'bad host'"))
    write(tmp_path, "x.yaml", "kind: Role\nmetadata: {name: app, pair: p}\n")
    problems = problems_of(tmp_path)
    assert len(problems) == 1 and "spec.nodes.0.host" in problems[0], problems


# ---------------------------------------------------------------- 6: which files are read

def test_suffixes_are_case_insensitive(tmp_path: Path):
    write(tmp_path, "pair.YAML", PAIR)
    write(tmp_path, "roles.Yml", "kind: Role\nmetadata: {name: r1, pair: p}\n")
    write(tmp_path, "dbs.yAmL", "kind: Database\nmetadata: {name: d1, pair: p}\n")
    assert sorted(d.address for d in load_path(tmp_path)) == ["database.p.d1", "pair.p", "role.p.r1"]


def test_hidden_files_and_directories_are_skipped(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, ".github/workflows/ci.yml", "on: push\njobs: {}\n")
    write(tmp_path, ".git/x.yaml", "kind: Bogus\n")
    write(tmp_path, "sub/.draft.yaml", "kind: Role\nmetadata: {name: draft, pair: p}\n")
    write(tmp_path, "sub/.hidden/r.yaml", "kind: Role\nmetadata: {name: hidden, pair: p}\n")
    write(tmp_path, "sub/r.yaml", "kind: Role\nmetadata: {name: seen, pair: p}\n")
    assert sorted(d.address for d in load_path(tmp_path)) == ["pair.p", "role.p.seen"]


def test_a_spec_directory_inside_a_hidden_directory_is_still_read(tmp_path: Path):
    root = tmp_path / ".config" / "specs"
    write(root, "pair.yaml", PAIR)
    assert [d.address for d in load_path(root)] == ["pair.p"]


@pytest.mark.parametrize("files", [{}, {"notes.txt": "x"}, {"empty.yaml": "# nothing yet\n"}, {".hidden.yaml": PAIR}])
def test_a_directory_without_spec_documents_is_an_error(tmp_path: Path, files: dict[str, str]):
    for rel, text in files.items():
        write(tmp_path, rel, text)
    for load in (load_path, load_desired):
        with pytest.raises(SpecError) as info:
            load(tmp_path)
        assert str(info.value).startswith(f"no spec documents under {tmp_path}")


# ---------------------------------------------------------------- 4: YAML nested very deep

@pytest.mark.parametrize("depth", [100, 300, 3000, 30000])
@pytest.mark.parametrize("shape", ["[", "{a: "])
def test_yaml_nested_very_deep_is_an_error_with_a_line(depth: int, shape: str):
    close = "]" if shape == "[" else "}"
    text = "kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  x: " + shape * depth + "1" + close * depth + "\n"
    docs, problems = parse_text(text, FILE)
    assert docs == []
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{FILE}:4: ") and "nested" in problems[0], problems


def test_yaml_nested_very_deep_in_block_style(tmp_path: Path):
    text = ("kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  x:\n"
            + "".join(" " * (2 + 2 * i) + "-\n" for i in range(400)) + " " * 802 + "1\n")
    docs, problems = parse_text(text, FILE)
    assert docs == [] and len(problems) == 1 and "nested" in problems[0], problems


@pytest.mark.parametrize("depth", [100, 2000])
def test_yaml_nested_deep_through_a_merge_key(depth: int):
    text = "kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  <<: {x: " + "[" * depth + "1" + "]" * depth + "}\n"
    docs, problems = parse_text(text, FILE)
    assert docs == [] and len(problems) == 1 and "nested" in problems[0], problems


def test_a_long_membership_chain_is_no_recursion_error(tmp_path: Path):
    roles = "".join(f"---\nkind: Role\nmetadata: {{name: r{i}, pair: p}}\nspec: {{member_of: [r{i + 1}]}}\n" for i in range(3000))
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "roles.yaml", roles + "---\nkind: Role\nmetadata: {name: r3000, pair: p}\nspec: {member_of: [r0]}\n")
    problems = problems_of(tmp_path)
    assert len(problems) == 1 and "member_of cycle r0 -> r1 -> " in problems[0] and "r3000 -> r0;" in problems[0]
    (tmp_path / "roles.yaml").write_text(roles + "---\nkind: Role\nmetadata: {name: r3000, pair: p}\n")
    assert len(load_desired(tmp_path).pairs["p"].roles) == 3001


@pytest.mark.parametrize("privileges", [True, 5, {"SELECT": 1}, [{}], [["SELECT"]]])
def test_privileges_of_the_wrong_type_are_a_spec_error_not_a_crash(privileges: Any) -> None:
    grant = {"kind": "Grant", "metadata": {"pair": "p"}, "spec": {
        "role": "r", "database": "d", "schemas": {"s": {"tables": privileges}}}}
    _, problems = parse_docs([grant])
    assert problems and "tables" in " ".join(problems)
