"""The namespace network's spec fields: Workspace subnet and network, Pair virtual_ip and witness. Each bad value
is an error naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgaasctl.errors import SpecError
from pgaasctl.spec.desired import load_desired


def _specs(tmp_path: Path, workspace: str, *pairs: str) -> Path:
    (tmp_path / "workspace.yaml").write_text(f"kind: Workspace\nspec: {workspace}\n")
    for i, pair in enumerate(pairs):
        (tmp_path / f"pair{i}.yaml").write_text(pair)
    return tmp_path


def _pair(name: str, extra: str) -> str:
    return (f"kind: Pair\nmetadata: {{name: {name}}}\nspec:\n  provider: local\n"
            f"  nodes: [{{name: {name}-a}}, {{name: {name}-b}}]\n{extra}")


def _error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_desired(path)
    return str(caught.value)


def test_a_good_network_loads(tmp_path: Path) -> None:
    desired = load_desired(_specs(tmp_path, "{network: namespaces, subnet: 10.213.5.0/24}",
                                  _pair("p", "  virtual_ip: 10.213.5.200\n  witness: {name: p-w}\n")))
    assert str(desired.workspace.subnet) == "10.213.5.0/24"
    spec = desired.pairs["p"].doc.spec
    assert str(spec.virtual_ip) == "10.213.5.200" and spec.witness is not None and spec.witness.name == "p-w"


@pytest.mark.parametrize(("subnet", "reason"), [
    ("8.8.8.0/24", "must be a private IPv4 network"),
    ("10.0.0.0/8", "must be a /16 to /28 network"),
    ("10.213.0.5/24", "must be an IPv4 network like"),
    ("nonsense", "must be an IPv4 network like"),
])
def test_a_bad_subnet_names_the_file_and_field(tmp_path: Path, subnet: str, reason: str) -> None:
    text = _error(_specs(tmp_path, f"{{subnet: '{subnet}'}}"))
    assert "workspace.yaml:2" in text and "subnet" in text and reason in text


@pytest.mark.parametrize(("vip", "reason"), [
    ("10.99.0.7", "is outside the workspace subnet 10.213.0.0/24"),
    ("10.213.0.1", "is the subnet's network, broadcast or bridge address"),
    ("10.213.0.255", "is the subnet's network, broadcast or bridge address"),
    ("'not an address'", "virtual_ip"),
    ("7", "must be an IPv4 address"),
])
def test_a_bad_virtual_ip_is_refused(tmp_path: Path, vip: str, reason: str) -> None:
    text = _error(_specs(tmp_path, "{}", _pair("p", f"  virtual_ip: {vip}\n")))
    assert "pair0.yaml:" in text and reason in text, text


def test_two_pairs_never_share_a_virtual_ip(tmp_path: Path) -> None:
    text = _error(_specs(tmp_path, "{}", _pair("p", "  virtual_ip: 10.213.0.9\n"), _pair("q", "  virtual_ip: 10.213.0.9\n")))
    assert "pair.q: virtual_ip 10.213.0.9 is already pair p's" in text


def test_the_witness_cannot_be_named_like_a_node(tmp_path: Path) -> None:
    text = _error(_specs(tmp_path, "{}", _pair("p", "  witness: {name: p-a}\n")))
    assert "the witness 'p-a' has the name of a node" in text
