"""The journal. `open_store(settings)` returns the store for DATABASE_URL (SQLite or
PostgreSQL, see docs/architecture.md "Journal"); `Journal` groups concurrent writes into
transactions of at most BATCH_SIZE records."""

from tradeengine.settings import Settings, redact_url
from tradeengine.store.base import AccountSnapshot, JournalState, Store, StoreError
from tradeengine.store.journal import Journal
from tradeengine.store.memory import MemoryStore

__all__ = [
    "AccountSnapshot",
    "Journal",
    "JournalState",
    "MemoryStore",
    "Store",
    "StoreError",
    "open_store",
    "store_for_url",
]


def store_for_url(url: str) -> Store:
    """The store a database URL names (not yet opened)."""
    if url.startswith("sqlite:"):
        from tradeengine.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from tradeengine.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"DATABASE_URL={redact_url(url)!r}: use sqlite:/// or postgresql://")


def open_store(settings: Settings) -> Store:
    """The store DATABASE_URL names (not yet opened: the engine opens it at start)."""
    return store_for_url(settings.database_url)
