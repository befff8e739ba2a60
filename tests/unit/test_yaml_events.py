"""Documents built from libyaml's events hold what PyYAML's safe_load builds, with the line of every field."""

from __future__ import annotations

import datetime
import random

import pytest
import yaml

from pgaasctl.spec.yaml_events import DuplicateKey, FileError, build_documents

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SAME_AS_PYYAML = [
    "a: 1\nb: [x, 2.5, true, null, ~]\nc: {d: '007', e: \"q\"}\n",
    "---\nkind: Role\n---\n---\nkind: Database\nspec: {owner: a}\n",
    "n: 0x1F\no: 0o17\nf: .inf\nt: 2026-12-02\nts: 2026-12-02 10:00:00\nyes: on\n",
    "s: !!str 12\ni: !!int '12'\nf: !!float '1'\nb: !!bool 'true'\n",
    "base: &b {x: 1, y: 2}\nother: *b\nlist: &l [1, 2]\nagain: *l\n",
    # merge keys: a key written in the mapping wins, an earlier merged mapping wins over a later one
    "a: &a {x: 1, y: 2}\nb: &b {y: 20, z: 30}\nc:\n  <<: [*a, *b]\n  z: 300\n",
    "a: &a {x: 1}\nc: {w: 0, <<: *a, x: 5}\n",
    "c:\n  <<: {p: 1, q: 2}\n  q: 3\n",
    "a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b}\n",
    "key with spaces: v\n'quoted: key': 1\n? complex\n: value\n",
    "multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "empty:\nempty_list: []\nempty_map: {}\n",
    "1: one\ntrue: yes\n".replace("1", "2"),
]


@pytest.mark.parametrize("text", SAME_AS_PYYAML)
def test_values_are_what_pyyaml_builds(text: str) -> None:
    built = build_documents(text, LOADER, 64)
    assert [d.data for d in built] == list(yaml.safe_load_all(text))
    assert all(d.error is None for d in built)


def test_random_nested_documents_match_pyyaml() -> None:
    rng = random.Random(7)
    scalars = ["plain", "1", "-3", "2.5", "true", "no", "null", "'quoted'", "\"x y\"", "2026-01-02", "0x10", "~"]

    def value(depth: int) -> str:
        if depth > 3 or rng.random() < 0.4:
            return rng.choice(scalars)
        if rng.random() < 0.5:
            return "[" + ", ".join(value(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        keys = rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 4))
        return "{" + ", ".join(f"{k}: {value(depth + 1)}" for k in keys) + "}"

    for _ in range(300):
        text = "\n---\n".join(f"doc: {value(0)}\nother: {value(1)}" for _ in range(rng.randint(1, 3))) + "\n"
        assert [d.data for d in build_documents(text, LOADER, 64)] == list(yaml.safe_load_all(text)), text


def test_every_key_and_item_has_its_line_and_each_document_its_first() -> None:
    text = "---\nkind: Role\nspec:\n  login: true\n  member_of:\n    - a\n    - b\n---\n\nkind: Grant\n"
    first, second = build_documents(text, LOADER, 64)
    assert first.line == 2 and second.line == 10
    assert first.lines[("spec",)] == 3 and first.lines[("spec", "login")] == 4
    assert first.lines[("spec", "member_of", 0)] == 6 and first.lines[("spec", "member_of", 1)] == 7
    assert second.lines[("kind",)] == 10


def test_a_merged_key_has_the_line_of_its_merge_key() -> None:
    built, = build_documents("base: &b {x: 1}\nuse:\n  y: 2\n  <<: *b\n", LOADER, 64)
    assert built.data["use"] == {"y": 2, "x": 1}
    assert built.lines[("use", "x")] == 4 and built.lines[("use", "y")] == 3


def test_aliases_share_their_anchors_value_without_copying() -> None:
    text = "a: &a [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"l{i}: &l{i} [*{'a' if i == 0 else f'l{i - 1}'}, *{'a' if i == 0 else f'l{i - 1}'}]\n" for i in range(30))
    built, = build_documents(text, LOADER, 64)  # 2**30 leaves if expanded
    assert built.data["l29"][0] is built.data["l28"]


def test_a_problem_spoils_its_own_document_and_no_other() -> None:
    text = "a: 1\na: 2\n---\n[x]: 1\n---\nt: !!timestamp 2027-02-30\n---\nfine: yes\n"
    dup, listkey, badtime, fine = build_documents(text, LOADER, 64)
    assert isinstance(dup.error, DuplicateKey) and dup.error.line == 2 and dup.error.key == "a"
    assert "a key must be a plain value" in str(listkey.error)
    assert "is not a valid timestamp" in str(badtime.error)
    assert fine.error is None and fine.data == {"fine": True}


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    built, = build_documents("a: &a {b: *a}\n", LOADER, 64)
    assert "an alias refers to itself" in str(built.error)


@pytest.mark.parametrize("text, reason", [
    ("a: " + "[" * 70 + "1" + "]" * 70 + "\n", "nested more than 64 levels deep"),
    ("a: *nowhere\n", "found undefined alias"),
])
def test_what_spoils_the_whole_file_is_raised(text: str, reason: str) -> None:
    with pytest.raises(FileError, match=reason):
        build_documents(text, LOADER, 64)


def test_a_merge_of_something_not_a_mapping_is_an_error() -> None:
    built, = build_documents("a: {<<: [1, 2]}\n", LOADER, 64)
    assert "a merge key (<<) takes a mapping" in str(built.error)


def test_keys_equal_in_python_are_duplicates_though_pyyaml_keeps_the_last() -> None:
    built, = build_documents("1: one\ntrue: yes\n", LOADER, 64)  # True == 1
    assert isinstance(built.error, DuplicateKey) and built.error.line == 2


def test_a_date_is_a_date() -> None:
    built, = build_documents("d: 2026-12-02\n", LOADER, 64)
    assert built.data["d"] == datetime.date(2026, 12, 2)
