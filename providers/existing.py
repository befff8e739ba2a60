"""provider: existing — the servers are already there; the spec says where."""

from __future__ import annotations

from pgaasctl.spec.models import PairDoc
from providers.base import Host


class ExistingProvider:
    name = "existing"

    def hosts(self, pair: PairDoc) -> list[Host]:
        return [Host(node=n.name, address=n.host, port=n.port) for n in pair.spec.nodes]
