"""The journal's schema: one set of tables for SQLite and PostgreSQL, built by numbered
migrations that `open()` applies, each in one transaction, recorded in `schema_migrations`.

A migration is never edited once released: a change to the schema is a new migration at the
end of MIGRATIONS. The DDL is written once, with the few words that differ per database as
placeholders (`{pk}` an auto-numbered key, `{seq}` a key the store numbers itself, `{float}`).

Tables, and why they look the way they do:
- `order_transitions`: every snapshot of every order (`OrderRecord`) with its time, the
  order as msgspec JSON in `body`. Append-only; `seq` is numbered by the store so that
  `orders.last_seq` can point at an order's latest snapshot without a second index here.
- `orders`: one row per order with the columns lookups and recovery filter on, and the seq
  of its first and latest transition. Few indexes, as every one is a page more per commit
  (ids are random, so each new order dirties a page of each of its two unique indexes; an
  update only touches its row, among the recent ones): recovery filters the open orders by
  a scan, which is fast over rows this small.
- `fills`: one row per execution, unique by the broker's `exec_id` (a replayed fill is
  ignored by the database itself), as plain columns: recovery reads them straight into the
  Rust book's batch replay without decoding JSON.
- `rejections`, `kill_switch`, `config`, `audit`, `tokens`, `account`: the other records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

_WORDS: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        "pk": "INTEGER PRIMARY KEY",
        "seq": "INTEGER PRIMARY KEY",
        "float": "REAL",
    },
    "postgresql": {
        "pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "seq": "BIGINT PRIMARY KEY",
        "float": "DOUBLE PRECISION",
    },
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    postgresql_only: tuple[str, ...] = ()

    def for_dialect(self, dialect: Dialect) -> list[str]:
        words = _WORDS[dialect]
        extra = self.postgresql_only if dialect == "postgresql" else ()
        return [s.format(**words) for s in self.statements] + list(extra)


KILL_SWITCH_CHANNEL = "tradeengine_kill_switch"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """CREATE TABLE order_transitions (
                seq {seq},
                order_id TEXT NOT NULL,
                status TEXT NOT NULL,
                at TEXT NOT NULL,
                body TEXT NOT NULL
            )""",
            """CREATE TABLE orders (
                id TEXT PRIMARY KEY,
                client_order_id TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL,
                is_open INTEGER NOT NULL,
                filled_qty {float} NOT NULL,
                stop_loss {float},
                first_seq BIGINT NOT NULL,
                last_seq BIGINT NOT NULL
            )""",
            """CREATE TABLE fills (
                seq {pk},
                exec_id TEXT NOT NULL UNIQUE,
                order_id TEXT NOT NULL,
                client_order_id TEXT NOT NULL,
                symbol TEXT NOT NULL,
                side TEXT NOT NULL,
                qty {float} NOT NULL,
                price {float} NOT NULL,
                fee {float} NOT NULL,
                at TEXT NOT NULL,
                liquidation INTEGER NOT NULL
            )""",
            """CREATE TABLE rejections (
                seq {pk},
                client_order_id TEXT NOT NULL,
                symbol TEXT NOT NULL,
                side TEXT NOT NULL,
                qty {float} NOT NULL,
                rule TEXT NOT NULL,
                reason TEXT NOT NULL,
                actor TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            """CREATE TABLE kill_switch (
                seq {pk},
                engaged INTEGER NOT NULL,
                actor TEXT NOT NULL,
                reason TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            """CREATE TABLE config (
                seq {pk},
                kind TEXT NOT NULL,
                changes TEXT NOT NULL,
                actor TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            """CREATE TABLE audit (
                seq {pk},
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            """CREATE TABLE tokens (
                seq {pk},
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            "CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL",
            "CREATE TABLE account (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        ),
        postgresql_only=(
            # Every kill switch row, whoever inserts it, wakes the running engine.
            f"""CREATE FUNCTION tradeengine_kill_switch_notify() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('{KILL_SWITCH_CHANNEL}', NEW.seq::text);
                    RETURN NEW;
                END
                $$""",
            """CREATE TRIGGER kill_switch_notify AFTER INSERT ON kill_switch
                FOR EACH ROW EXECUTE FUNCTION tradeengine_kill_switch_notify()""",
        ),
    ),
)

CREATE_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
