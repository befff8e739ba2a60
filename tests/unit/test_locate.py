"""Where a workspace is: a stray Workspace document in a shared directory never captures specs below it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgaasctl.errors import SpecError
from pgaasctl.locate import locate

PAIR = "kind: Pair\nmetadata: {name: p}\nspec: {provider: existing, nodes: [{name: a, host: 127.0.0.9}]}\n"


def test_a_workspace_document_above_names_the_part(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "specs" / "roles").mkdir(parents=True)
    (root / "specs" / "workspace.yaml").write_text("kind: Workspace\n")
    (root / "specs" / "roles" / "r.yaml").write_text(PAIR)
    found = locate(root / "specs" / "roles" / "r.yaml")
    assert found.root == root / "specs" and found.part == root / "specs" / "roles" / "r.yaml"
    assert locate(root / "specs" / "roles").part == root / "specs" / "roles"


def test_shared_directories_are_never_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "workspace.yaml").write_text("kind: Workspace\n")  # a stray one in the home directory
    specs = tmp_path / "project" / "specs"
    specs.mkdir(parents=True)
    (specs / "pair.yaml").write_text(PAIR)
    assert locate(specs).root == specs  # its own root, not the home directory
    with pytest.raises(SpecError):
        locate(specs / "pair.yaml")  # a file in no workspace
