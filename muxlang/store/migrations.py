"""Schema versions and the ordered migrations between them.

``MIGRATIONS[i]`` upgrades a store from version ``i`` to ``i + 1`` (version 0 = empty database).
Each runs in the same transaction as the version bump, under a lock (``BEGIN IMMEDIATE`` on
SQLite, an advisory lock on PostgreSQL), so two processes opening a new store at once cannot both
migrate it, and a failed migration leaves the previous version intact.

To change the schema: append a function here, update ``schema.py`` to the new shape, and add a
test that opens a store of the previous version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, Text, inspect, text
from sqlalchemy.engine import Connection

from muxlang.store import schema as s


@dataclass(frozen=True)
class Migration:
    version: int  # the version this migration produces
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """Datasets, items, samples (unique on key hash + index), runs."""
    meta = MetaData()
    for table in (s.datasets, s.items, s.samples):
        table.to_metadata(meta)
    Table(
        "runs", meta,
        Column("id", s.ID, primary_key=True, autoincrement=True),
        Column("command", String(32), nullable=False),
        Column("spec_path", Text),
        Column("spec_text", Text),
        Column("spec_hash", String(64)),
        Column("parameters", Text, nullable=False),
        Column("started_at", Float, nullable=False),
        Column("ended_at", Float),
        Column("status", String(16), nullable=False),
    )
    meta.create_all(conn)


def _v2_answer_cache(conn: Connection) -> None:
    """Answer/equivalence-key cache per (sample, signature), gold keys, ``runs.summary``."""
    meta = MetaData()
    # the foreign keys need their targets in the same MetaData
    for table in (s.datasets, s.items, s.samples, s.answers, s.gold_keys):
        table.to_metadata(meta)
    meta.tables["answers"].create(conn)
    meta.tables["gold_keys"].create(conn)
    columns = {c["name"] for c in inspect(conn).get_columns("runs")}
    if "summary" not in columns:
        conn.execute(text("ALTER TABLE runs ADD COLUMN summary TEXT"))


def _v3_run_owner(conn: Connection) -> None:
    """``runs.host`` and ``runs.pid``: which process a run belongs to, so a run left "running"
    by a killed process can be told from one still going."""
    columns = {c["name"] for c in inspect(conn).get_columns("runs")}
    if "host" not in columns:
        conn.execute(text("ALTER TABLE runs ADD COLUMN host VARCHAR(255)"))
    if "pid" not in columns:
        conn.execute(text("ALTER TABLE runs ADD COLUMN pid INTEGER"))


def _v4_collect_leases(conn: Connection) -> None:
    """``collect_leases``: what concurrent collectors are drawing, and until when (additive)."""
    meta = MetaData()
    s.collect_leases.to_metadata(meta).create(conn, checkfirst=True)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _v1_initial),
    Migration(2, "answer cache, gold keys, run summaries", _v2_answer_cache),
    Migration(3, "run owner (host, pid)", _v3_run_owner),
    Migration(4, "leases of concurrent collectors", _v4_collect_leases),
]

LATEST = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(s.schema_version.select().where(s.schema_version.c.id == 1)).first()
    return int(row.version) if row else 0


def upgrade(conn: Connection, target: int = LATEST) -> tuple[int, int]:
    """Bring the database in ``conn`` (inside a transaction) to ``target``; (before, after)."""
    s.schema_version.create(conn, checkfirst=True)
    before = current_version(conn)
    version = before
    for migration in MIGRATIONS:
        if version < migration.version <= target:
            migration.apply(conn)
            version = migration.version
    if version != before:
        if before == 0:
            conn.execute(s.schema_version.insert().values(id=1, version=version))
        else:
            conn.execute(s.schema_version.update().where(s.schema_version.c.id == 1)
                         .values(version=version))
    return before, version
