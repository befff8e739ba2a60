"""provider: existing — the servers are already there; the spec says where, and how to reach them over SSH."""

from __future__ import annotations

from pathlib import Path

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import ExistingPairSpec, PairDoc
from providers.base import Host


class ExistingProvider:
    name = "existing"

    def __init__(self, spec_dir: Path | None = None) -> None:
        self.spec_dir = spec_dir or Path.cwd()

    def hosts(self, pair: PairDoc) -> list[Host]:
        assert isinstance(pair.spec, ExistingPairSpec)
        out = []
        for node in pair.spec.nodes:
            host = Host(pair=pair.metadata.name, node=node.name, address=node.host, pg_port=node.port)
            if node.ssh is not None:
                key = Path(node.ssh.key_file)
                host.ssh_port, host.ssh_user = node.ssh.port, node.ssh.user
                host.key_file = str(key if key.is_absolute() else self.spec_dir / key)
                host.repmgr_conf, host.bin_dir = node.ssh.repmgr_config, node.ssh.bin_dir
            out.append(host)
        return out

    def create_hosts(self, pair: PairDoc, nodes: list[str]) -> list[Host]:
        raise PgaasError(f"pair {pair.metadata.name!r}: provider existing cannot create nodes {', '.join(nodes)}")

    def start_hosts(self, pair: PairDoc, nodes: list[str]) -> None:
        raise PgaasError(f"pair {pair.metadata.name!r}: provider existing cannot start nodes {', '.join(nodes)}")

    def destroy_hosts(self, pair: PairDoc) -> None:
        """The servers are not ours: nothing to remove."""

    def undeclared_hosts(self, pair: PairDoc) -> list[Host]:
        return []  # only the spec says where existing servers are

    def remove_host(self, pair: PairDoc, node: str) -> None:
        """The server is not ours: it keeps running, unregistered."""
