"""The narrow protocol every provider implements."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from pgaasctl.spec.models import PairDoc


class Host(BaseModel):
    """A node's address as the provider knows it."""

    node: str
    address: str
    port: int


class Provider(Protocol):
    name: str

    def hosts(self, pair: PairDoc) -> list[Host]:
        """The hosts of `pair` that exist now."""
        ...
