"""Spec loading: YAML parsing, validation and cross-document checks, with file:line in every message."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from pgaasctl.errors import SpecError
from pgaasctl.spec.desired import build_desired, load_desired
from pgaasctl.spec.loader import load_path, parse_text
from pgaasctl.spec.models import DOCUMENT_MODELS, DatabaseDoc, PairDoc, RoleDoc

FILE = Path("/specs/main.yaml")

PAIR = """\
kind: Pair
metadata: {name: p}
spec:
  provider: existing
  nodes: [{name: a, host: 127.0.0.1}]
"""


def parse(text: str) -> tuple[list, list[str]]:
    return parse_text(textwrap.dedent(text), FILE)


def one_problem(text: str) -> str:
    docs, problems = parse(text)
    assert docs == [], docs
    assert len(problems) == 1, problems
    return problems[0]


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def desired_problems(tmp_path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_desired(tmp_path)
    return info.value.problems


# ---------------------------------------------------------------- parse_text: happy path

def test_valid_documents_parse_with_their_start_lines():
    docs, problems = parse(
        """\
        kind: Role
        metadata: {name: app, pair: p}
        spec: {login: true}
        ---
        # a comment first
        kind: Database
        metadata: {name: db, pair: p}
        """
    )
    assert problems == []
    assert [type(d.doc) for d in docs] == [RoleDoc, DatabaseDoc]
    assert [d.source.line for d in docs] == [1, 6]
    assert [d.address for d in docs] == ["role.p.app", "database.p.db"]
    assert str(docs[1].source) == f"{FILE}:6"
    assert docs[0].doc.spec.login is True


def test_a_file_of_comments_only_has_no_documents_and_no_problems():
    assert parse("# nothing here yet\n") == ([], [])
    assert parse("") == ([], [])


@pytest.mark.parametrize(
    "text",
    [
        "---\nkind: Role\nmetadata: {name: a, pair: p}\n---\n",  # trailing separator
        "kind: Role\nmetadata: {name: a, pair: p}\n---\n# kind: Role (commented out)\n",
        "---\n---\nkind: Role\nmetadata: {name: a, pair: p}\n",  # empty document first
    ],
    ids=["trailing-separator", "commented-out-document", "leading-empty-document"],
)
def test_empty_documents_are_skipped(text: str):
    # An explicit but empty document (`---` with nothing, or only comments, after it) is common in
    # hand-written and generated YAML; it holds no object and is not an error.
    docs, problems = parse(text)
    assert problems == []
    assert [d.address for d in docs] == ["role.p.a"]


def test_where_points_at_the_line_of_a_nested_field():
    docs, _ = parse(
        """\
        kind: Database
        metadata: {name: db, pair: p}
        spec:
          owner: app
          schemas:
            - name: s1
            - name: s2
              owner: app
        """
    )
    d = docs[0]
    assert d.where("spec", "owner") == f"{FILE}:4"
    assert d.where("spec", "schemas", 1, "owner") == f"{FILE}:8"
    # an unknown deeper part falls back to the deepest known one
    assert d.where("spec", "schemas", 0, "nothing", "here") == f"{FILE}:6"


# ---------------------------------------------------------------- parse_text: problems

def test_malformed_yaml_reports_file_and_line():
    problem = one_problem(
        """\
        kind: Role
        metadata: {name: a, pair: p}
        spec:
          login: true: false
        """
    )
    assert problem.startswith(f"{FILE}:4: malformed YAML:")
    assert "mapping values are not allowed" in problem


def test_malformed_yaml_in_a_later_document_reports_the_absolute_line():
    # an unclosed flow mapping on line 5 of the file (line 2 of the second document)
    problem = one_problem("kind: Role\nmetadata: {name: a, pair: p}\n---\nkind: Role\nmetadata: {name: b, pair: p\nspec: {}\n")
    assert problem.startswith(f"{FILE}:5: malformed YAML")
    assert "flow mapping" in problem


def test_unknown_kind_names_file_line_and_the_known_kinds():
    problem = one_problem(
        """\
        # leading comment

        kind: Rol
        metadata: {name: a, pair: p}
        """
    )
    assert problem.startswith(f"{FILE}:3: ")
    assert "unknown kind 'Rol'" in problem
    for kind in DOCUMENT_MODELS:
        assert kind in problem
    assert set(DOCUMENT_MODELS) == {"Pair", "Role", "Database", "Grant", "Workspace"}


def test_missing_kind_is_reported():
    problem = one_problem("metadata: {name: a, pair: p}\n")
    assert problem.startswith(f"{FILE}:1: kind: missing")
    assert "Pair" in problem


def test_a_document_that_is_not_a_mapping_is_reported():
    docs, problems = parse("kind: Role\nmetadata: {name: a, pair: p}\n---\n- one\n- two\n")
    assert [d.address for d in docs] == ["role.p.a"]
    assert len(problems) == 1
    assert problems[0].startswith(f"{FILE}:4: ")
    assert "mapping" in problems[0]


def test_unknown_field_reports_line_and_dotted_path():
    problem = one_problem(
        """\
        kind: Role
        metadata: {name: app, pair: p}
        spec:
          login: true
          connectio_limit: 5
        """
    )
    assert problem == f"{FILE}:5: Role 'app': spec.connectio_limit: unknown field"


def test_unknown_field_inside_a_list_item_has_the_index_in_its_path():
    problem = one_problem(
        """\
        kind: Pair
        metadata: {name: p}
        spec:
          provider: existing
          nodes:
            - name: a
              host: 127.0.0.1
              prot: 5433
        """
    )
    assert problem.startswith(f"{FILE}:8: Pair 'p': spec.nodes.0.prot: unknown field")


def test_wrong_type_names_the_field_and_line():
    problem = one_problem(
        """\
        kind: Role
        metadata: {name: app, pair: p}
        spec:
          login: maybe
        """
    )
    assert problem.startswith(f"{FILE}:4: Role 'app': spec.login: ")
    assert "boolean" in problem


def test_wrong_literal_shows_what_was_given():
    problem = one_problem(
        """\
        kind: Pair
        metadata: {name: p}
        spec:
          provider: existing
          replication: sometimes
          nodes: [{name: a, host: h}]
        """
    )
    assert problem.startswith(f"{FILE}:5: Pair 'p': spec.replication: ")
    assert "'sometimes'" in problem


def test_missing_required_field_is_reported_at_its_parent():
    problem = one_problem(
        """\
        kind: Pair
        metadata: {name: p}
        spec:
          nodes: [{name: a, host: h}]
        """
    )
    assert problem == f"{FILE}:3: Pair 'p': spec.provider: required field is missing"


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("'a;b'", "';'"),
        ("'a b'", "' '"),
        ("'a\"b'", "'\"'"),
        ("\"it's\"", "\"'\""),
        ("1abc", "must start with a letter or _"),
        ("pg_app", "starts with pg_"),
        ("PG_App", "starts with pg_"),
    ],
)
def test_invalid_identifiers_are_rejected_with_file_and_line(name: str, needle: str):
    problem = one_problem(f"kind: Role\nmetadata:\n  pair: p\n  name: {name}\n")
    assert problem.startswith(f"{FILE}:4: ")
    assert "metadata.name" in problem
    assert needle in problem


def test_names_up_to_63_bytes_are_accepted():
    docs, problems = parse(f"kind: Role\nmetadata: {{pair: p, name: {'a' * 63}}}\n")
    assert problems == []
    assert docs[0].doc.metadata.name == "a" * 63


def test_a_64_byte_name_is_rejected():
    problem = one_problem(f"kind: Role\nmetadata: {{pair: p, name: {'a' * 64}}}\n")
    assert "64 bytes" in problem and "63" in problem


def test_name_length_counts_utf8_bytes_not_characters():
    name = "é" * 32  # 32 characters, 64 bytes
    assert len(name) < 63 < len(name.encode())
    problem = one_problem(f"kind: Database\nmetadata: {{pair: p, name: {name}}}\n")
    assert problem.startswith(f"{FILE}:2: ")
    assert "64 bytes" in problem


def test_invalid_identifier_in_a_reference_field_is_rejected():
    problem = one_problem(
        """\
        kind: Database
        metadata: {name: db, pair: p}
        spec:
          owner: "x; DROP TABLE t"
        """
    )
    assert problem.startswith(f"{FILE}:4: Database 'db': spec.owner: ")
    assert "';'" in problem


def test_duplicate_yaml_key_names_the_key_and_its_second_line():
    problem = one_problem(
        """\
        kind: Role
        metadata: {name: a, pair: p}
        spec:
          login: true
          createdb: true
          login: false
        """
    )
    assert problem == f"{FILE}:6: duplicate key 'login'"


def test_duplicate_key_in_a_nested_mapping_of_a_later_document():
    docs, problems = parse(
        "kind: Role\nmetadata: {name: a, pair: p}\n---\nkind: Role\nmetadata: {name: b, pair: p, name: c}\n"
    )
    assert [d.address for d in docs] == ["role.p.a"]
    assert problems == [f"{FILE}:5: duplicate key 'name'"]


def test_pg_predefined_roles_are_allowed_in_member_of():
    docs, problems = parse(
        """\
        kind: Role
        metadata: {name: reader, pair: p}
        spec:
          member_of: [pg_read_all_data, pg_monitor]
        """
    )
    assert problems == []
    assert docs[0].doc.spec.member_of == ["pg_read_all_data", "pg_monitor"]


def test_member_of_entries_are_still_checked_as_identifiers():
    problem = one_problem("kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  member_of: [ok, 'x y']\n")
    assert problem.startswith(f"{FILE}:4: Role 'r': spec.member_of.1: ")


def test_member_of_a_pg_prefixed_name_with_forbidden_characters_is_rejected():
    # Predefined roles (pg_monitor, ...) may be referenced, but the exemption from the pg_ rule must not
    # also exempt the name from the character rules that make quotes, semicolons and spaces an error.
    _, problems = parse(
        """\
        kind: Role
        metadata: {name: r, pair: p}
        spec:
          member_of: ['pg_monitor"; DROP ROLE x; --']
        """
    )
    assert len(problems) == 1, problems
    assert "spec.member_of.0" in problems[0]


def test_several_problems_in_one_document_are_all_reported():
    _, problems = parse(
        """\
        kind: Role
        metadata: {name: app, pair: p}
        spec:
          login: maybe
          connection_limit: many
          colour: blue
        """
    )
    assert len(problems) == 3, problems
    assert any(p.startswith(f"{FILE}:4: ") and "spec.login" in p for p in problems)
    assert any(p.startswith(f"{FILE}:5: ") and "spec.connection_limit" in p for p in problems)
    assert any(p.startswith(f"{FILE}:6: ") and "spec.colour: unknown field" in p for p in problems)


def test_a_bad_document_does_not_hide_the_good_ones():
    docs, problems = parse("kind: Role\nmetadata: {name: good, pair: p}\n---\nkind: Nope\n---\nkind: Role\nmetadata: {name: also, pair: p}\n")
    assert [d.address for d in docs] == ["role.p.good", "role.p.also"]
    assert len(problems) == 1 and problems[0].startswith(f"{FILE}:4: ")


# ---------------------------------------------------------------- load_path

def test_load_path_recurses_and_reads_yml_and_yaml_only(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "a/roles.yml", "kind: Role\nmetadata: {name: r1, pair: p}\n")
    write(tmp_path, "a/b/c/dbs.yaml", "kind: Database\nmetadata: {name: d1, pair: p}\n")
    write(tmp_path, "a/notes.txt", "kind: Bogus\n")
    write(tmp_path, "a/b/README.md", "# not yaml: {[\n")
    write(tmp_path, "a/b/old.yaml.bak", "kind: Bogus\n")
    docs = load_path(tmp_path)
    assert sorted(d.address for d in docs) == ["database.p.d1", "pair.p", "role.p.r1"]
    by_address = {d.address: d for d in docs}
    assert by_address["database.p.d1"].source.file == tmp_path / "a/b/c/dbs.yaml"


def test_load_path_on_a_single_file(tmp_path: Path):
    path = write(tmp_path, "one.yaml", "kind: Role\nmetadata: {name: r1, pair: p}\n")
    write(tmp_path, "other.yaml", "kind: Role\nmetadata: {name: r2, pair: p}\n")
    assert [d.address for d in load_path(path)] == ["role.p.r1"]


def test_load_path_missing_path(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(SpecError) as info:
        load_path(missing)
    assert str(missing) in str(info.value)
    assert "no such file or directory" in str(info.value)


def test_load_path_reports_problems_of_every_file_at_once(tmp_path: Path):
    first = write(tmp_path, "a.yaml", "kind: Role\nmetadata: {name: ok, pair: p}\nspec:\n  login: maybe\n")
    second = write(tmp_path, "sub/b.yml", "# c\nkind: Wat\n")
    third = write(tmp_path, "sub/c.yaml", "kind: Role\nmetadata: {name: 'x;y', pair: p}\n")
    with pytest.raises(SpecError) as info:
        load_path(tmp_path)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{first}:4: ")
    assert problems[1].startswith(f"{second}:2: ")
    assert problems[2].startswith(f"{third}:2: ")
    assert str(info.value) == "\n".join(problems)


def test_load_path_reports_a_file_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("kind: Role\nmetadata: {name: caf\xe9, pair: p}\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_path(tmp_path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


# ---------------------------------------------------------------- build_desired / load_desired

def test_load_desired_groups_objects_per_pair(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(
        tmp_path,
        "objs/all.yaml",
        """\
        kind: Role
        metadata: {name: app, pair: p}
        ---
        kind: Role
        metadata: {name: reader, pair: p}
        spec: {member_of: [app, pg_read_all_data]}
        ---
        kind: Database
        metadata: {name: db, pair: p}
        spec: {owner: app, schemas: [{name: s1, owner: postgres}]}
        ---
        kind: Grant
        metadata: {pair: p}
        spec: {role: reader, database: db, schemas: {public: {tables: [SELECT]}, s1: {privileges: [USAGE]}}}
        ---
        kind: Workspace
        spec: {lock_timeout: 7}
        """,
    )
    desired = load_desired(tmp_path)
    pair = desired.pairs["p"]
    assert isinstance(pair.doc, PairDoc)
    assert sorted(pair.roles) == ["app", "reader"]
    assert list(pair.databases) == ["db"]
    assert list(pair.grants) == [("db", "reader")]
    assert desired.workspace.lock_timeout == 7
    assert "grant.p.db.reader" in desired.by_address()
    assert pair.admin_users() == {"postgres"}


def test_the_same_object_in_two_files_names_both_locations(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    first = write(tmp_path, "a.yaml", "kind: Role\nmetadata: {name: app, pair: p}\n")
    second = write(tmp_path, "b/more.yaml", "# dup\n\nkind: Role\nmetadata: {name: app, pair: p}\n")
    problems = desired_problems(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{second}:3: ")
    assert "role.p.app" in problems[0]
    assert f"{first}:1" in problems[0]


def test_two_grants_for_the_same_role_and_database_are_duplicates(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(
        tmp_path,
        "g.yaml",
        """\
        kind: Role
        metadata: {name: app, pair: p}
        ---
        kind: Database
        metadata: {name: db, pair: p}
        ---
        kind: Grant
        metadata: {pair: p, name: first}
        spec: {role: app, database: db, privileges: [CONNECT]}
        ---
        kind: Grant
        metadata: {pair: p, name: second}
        spec: {role: app, database: db, privileges: [TEMP]}
        """,
    )
    problems = desired_problems(tmp_path)
    assert len(problems) == 1
    assert "grant.p.db.app is declared twice" in problems[0]
    assert problems[0].startswith(f"{tmp_path / 'g.yaml'}:11: ")
    assert f"{tmp_path / 'g.yaml'}:7" in problems[0]


def test_reference_to_an_undeclared_pair(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(tmp_path, "r.yaml", "kind: Role\nmetadata:\n  name: app\n  pair: nopair\n")
    problems = desired_problems(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:4: role.nopair.app: pair 'nopair' is not declared")
    assert "pairs: p" in problems[0]


def test_reference_to_a_pair_when_none_is_declared(tmp_path: Path):
    write(tmp_path, "r.yaml", "kind: Role\nmetadata: {name: app, pair: p}\n")
    problems = desired_problems(tmp_path)
    assert "none declared" in problems[0]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        # owner of a database
        ("kind: Database\nmetadata: {name: db, pair: p}\nspec:\n  owner: ghost\n", 4, "owner 'ghost'"),
        # owner of a schema
        ("kind: Database\nmetadata: {name: db, pair: p}\nspec:\n  schemas:\n    - name: s\n      owner: ghost\n", 6,
         "schema owner 'ghost'"),
        # member_of
        ("kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  member_of:\n    - pg_monitor\n    - ghost\n", 6,
         "member_of 'ghost'"),
    ],
)
def test_reference_to_an_undeclared_role(tmp_path: Path, text: str, line: int, needle: str):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(tmp_path, "objs.yaml", text)
    problems = desired_problems(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: ")
    assert needle in problems[0]
    assert "not a role declared for pair 'p'" in problems[0]


def test_role_declared_on_another_pair_does_not_count(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "pair2.yaml", PAIR.replace("name: p}", "name: q}").replace("127.0.0.1", "127.0.0.3"))
    write(tmp_path, "objs.yaml", "kind: Role\nmetadata: {name: app, pair: q}\n---\nkind: Database\nmetadata: {name: db, pair: p}\nspec: {owner: app}\n")
    problems = desired_problems(tmp_path)
    assert len(problems) == 1
    assert "database.p.db: owner 'app'" in problems[0]


def test_admin_user_and_predefined_roles_need_no_declaration(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(
        tmp_path,
        "objs.yaml",
        """\
        kind: Database
        metadata: {name: db, pair: p}
        spec: {owner: postgres}
        ---
        kind: Role
        metadata: {name: r, pair: p}
        spec: {member_of: [pg_read_all_data, postgres]}
        """,
    )
    desired = load_desired(tmp_path)
    assert set(desired.pairs["p"].roles) == {"r"}


def test_a_role_cannot_be_a_member_of_itself(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(tmp_path, "r.yaml", "kind: Role\nmetadata: {name: r, pair: p}\nspec:\n  member_of: [r]\n")
    problems = desired_problems(tmp_path)
    assert any(p.startswith(f"{path}:4: ") and "member of itself" in p for p in problems)


def test_grant_references_are_checked(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(
        tmp_path,
        "grants.yaml",
        """\
        kind: Role
        metadata: {name: app, pair: p}
        ---
        kind: Database
        metadata: {name: db, pair: p}
        spec: {schemas: [s1]}
        ---
        kind: Grant
        metadata: {pair: p}
        spec:
          role: ghost
          database: db
          schemas:
            public: {tables: [SELECT]}
            s1: {privileges: [USAGE]}
            nope: {tables: [SELECT]}
        ---
        kind: Grant
        metadata: {pair: p}
        spec:
          role: app
          database: nodb
        """,
    )
    problems = desired_problems(tmp_path)
    assert len(problems) == 3, problems
    role_problem, schema_problem, db_problem = problems
    assert role_problem.startswith(f"{path}:11: grant.p.db.ghost: role 'ghost' is not a role declared")
    assert schema_problem.startswith(f"{path}:16: grant.p.db.ghost: schema 'nope' is not declared in database.p.db")
    assert "declared: public, s1" in schema_problem
    assert db_problem.startswith(f"{path}:22: grant.p.nodb.app: database 'nodb' is not declared for pair 'p'")


def test_default_privileges_for_role_must_be_declared(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    path = write(
        tmp_path,
        "g.yaml",
        """\
        kind: Role
        metadata: {name: app, pair: p}
        ---
        kind: Database
        metadata: {name: db, pair: p}
        ---
        kind: Grant
        metadata: {pair: p}
        spec:
          role: app
          database: db
          schemas:
            public:
              default_privileges:
                for_role: writer
                tables: [SELECT]
        """,
    )
    problems = desired_problems(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:15: ")
    assert "for_role 'writer'" in problems[0]


def test_build_desired_reports_all_cross_document_problems_at_once(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(
        tmp_path,
        "x.yaml",
        """\
        kind: Role
        metadata: {name: r, pair: p}
        spec: {member_of: [ghost1]}
        ---
        kind: Database
        metadata: {name: db, pair: p}
        spec: {owner: ghost2}
        ---
        kind: Role
        metadata: {name: z, pair: elsewhere}
        """,
    )
    problems = desired_problems(tmp_path)
    assert len(problems) == 3, problems
    joined = "\n".join(problems)
    for needle in ("ghost1", "ghost2", "'elsewhere'"):
        assert needle in joined


def test_build_desired_of_nothing_is_empty():
    desired = build_desired([])
    assert desired.pairs == {}
    assert desired.documents == []
    assert desired.workspace.store == "sqlite:///state/pgaasctl.db"


def test_recursive_alias_and_non_scalar_keys_are_errors(tmp_path):
    from pathlib import Path as _Path

    from pgaasctl.spec.loader import parse_text as _parse

    _, problems = _parse("kind: Role\nmetadata: {name: a, pair: p}\nspec: &x {member_of: [*x]}\n", _Path("r.yaml"))
    assert problems == ["r.yaml:3: malformed YAML: an alias refers to itself"]
    _, problems = _parse("kind: Role\nmetadata: {name: a, pair: p}\nspec:\n  ? [a, b]\n  : 1\n", _Path("k.yaml"))
    assert problems == ["k.yaml:4: malformed YAML: a key must be a plain value, not a list or mapping"]


def test_alias_bomb_is_not_expanded():
    import time
    from pathlib import Path as _Path

    from pgaasctl.spec.loader import parse_text as _parse

    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join(f"*{prev}" for _ in range(10)) + "]")
    text = "kind: Role\nmetadata: {name: a, pair: p}\nspec:\n  " + "\n  ".join(lines) + "\n"
    started = time.monotonic()
    _, problems = _parse(text, _Path("b.yaml"))
    assert time.monotonic() - started < 5  # 10**12 leaves if expanded
    assert "b.yaml:4: Role 'a': spec.a: unknown field" in problems


@pytest.mark.parametrize("provider, node", [("local", "{name: n%d}"),
                                            ("existing", "{name: n%d, host: 127.0.0.9}")])
def test_a_third_node_is_refused_with_a_plain_sentence(provider: str, node: str) -> None:
    nodes = ", ".join(node % i for i in range(3))
    docs, problems = parse(f"kind: Pair\nmetadata: {{name: p}}\nspec:\n  provider: {provider}\n  nodes: [{nodes}]\n")
    assert docs == []
    assert len(problems) == 1 and problems[0].endswith(
        "spec.nodes: a pair has one or two nodes (a primary and a standby), got 3: pgaasctl does not run more "
        "standbys yet; declare another pair instead"), problems
    assert ":5:" in problems[0] and "List should" not in problems[0]
    _, none = parse(f"kind: Pair\nmetadata: {{name: p}}\nspec:\n  provider: {provider}\n  nodes: []\n")
    assert none and none[0].endswith("spec.nodes: a pair needs at least one node"), none


def test_two_pairs_on_one_server_are_refused(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "pair2.yaml", PAIR.replace("name: p}", "name: q}").replace("host: 127.0.0.1", "host: 127.0.0.1, port: 5432"))
    problems = desired_problems(tmp_path)
    assert len(problems) == 1 and "pair2.yaml:5" in problems[0], problems
    assert "node a of pair q is the server 127.0.0.1:5432, which node a of pair p already is" in problems[0]


def test_reserved_role_names_and_owner_privileges_are_found_offline(tmp_path: Path):
    write(tmp_path, "pair.yaml", PAIR)
    write(tmp_path, "objs.yaml", "kind: Role\nmetadata: {name: public, pair: p}\n---\n"
                                 "kind: Role\nmetadata: {name: app, pair: p}\n---\n"
                                 "kind: Database\nmetadata: {name: db, pair: p}\nspec: {owner: app}\n---\n"
                                 "kind: Grant\nmetadata: {pair: p}\nspec: {role: app, database: db, privileges: [CONNECT]}\n")
    problems = desired_problems(tmp_path)
    assert any("'public' is a name PostgreSQL reserves" in p for p in problems), problems
    assert any("'app' owns database 'db' and holds every privilege on it" in p and ":13:" in p for p in problems), problems


@pytest.mark.parametrize("value", ["2027-02-30", "2027-13-01", "2027-01-01 25:00:00"])
def test_an_impossible_timestamp_is_a_yaml_error_not_a_crash(value: str) -> None:
    docs, problems = parse(f"kind: Role\nmetadata: {{name: a, pair: p}}\nspec: {{valid_until: {value}}}\n")
    assert docs == [] and len(problems) == 1, problems
    assert ":3: malformed YAML:" in problems[0] and "is not a valid timestamp" in problems[0]


def test_a_symlinked_directory_is_part_of_the_specs_and_a_link_loop_ends(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    write(shared, "role.yaml", "kind: Role\nmetadata: {name: linked, pair: p}\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs, "pair.yaml", PAIR)
    (specs / "shared").symlink_to(shared)
    (shared / "loop").symlink_to(specs)
    desired = load_desired(specs)
    assert set(desired.pairs["p"].roles) == {"linked"}


def test_a_spec_file_that_cannot_be_read_is_an_error_not_skipped(tmp_path: Path) -> None:
    write(tmp_path, "pair.yaml", PAIR)
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "moved-away.yaml")
    os.mkfifo(tmp_path / "pipe.yml")
    with pytest.raises(SpecError) as info:
        load_desired(tmp_path)
    text = str(info.value)
    assert "gone.yaml: not a regular file" in text and "pipe.yml: not a regular file" in text


def test_extensions_may_start_with_pg() -> None:
    docs, problems = parse("kind: Database\nmetadata: {name: d, pair: p}\nspec: {extensions: [pg_trgm, pg_stat_statements]}\n")
    assert problems == [] and [e.name for e in docs[0].doc.spec.extensions] == ["pg_trgm", "pg_stat_statements"]
