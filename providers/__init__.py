"""Host providers: how the nodes of a pair come to exist. Everything after that is the same for all of them."""

from __future__ import annotations

from pathlib import Path

from pgaasctl.spec.models import CloudPairSpec, ExistingPairSpec, LocalPairSpec, PairDoc, WorkspaceSpec
from pgaasctl.store import Store
from providers.base import CreatingProvider, Host, HostLayout, Provider
from providers.existing import ExistingProvider
from providers.local import LocalProvider


def provider_for(pair: PairDoc, workspace: WorkspaceSpec, store: Store, spec_dir: Path) -> Provider:
    if isinstance(pair.spec, LocalPairSpec):
        return LocalProvider(workspace, store)
    if isinstance(pair.spec, CloudPairSpec):
        from providers.cloud import CloudProvider

        return CloudProvider(workspace, store, spec_dir)
    assert isinstance(pair.spec, ExistingPairSpec)
    return ExistingProvider(spec_dir)


__all__ = ["CreatingProvider", "ExistingProvider", "Host", "HostLayout", "LocalProvider", "Provider", "provider_for"]
