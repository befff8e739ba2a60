"""Host providers: how the nodes of a pair come to exist. Everything after that is the same for all of them."""

from providers.base import Host, Provider
from providers.existing import ExistingProvider

PROVIDERS: dict[str, Provider] = {"existing": ExistingProvider()}


def provider_for(name: str) -> Provider:
    return PROVIDERS[name]


__all__ = ["Host", "Provider", "PROVIDERS", "provider_for", "ExistingProvider"]
