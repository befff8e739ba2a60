"""State store: managed objects, pairs and nodes, apply history, locks. SQLite by default, or PostgreSQL."""

from pgaasctl.store.store import LockInfo, ManagedObject, Store, StoreMissing, open_store

__all__ = ["LockInfo", "ManagedObject", "Store", "StoreMissing", "open_store"]
