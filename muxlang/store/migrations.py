"""Schema versions and the ordered migrations between them.

``MIGRATIONS[i]`` upgrades a store from version ``i`` to ``i + 1`` (version 0 = empty database).
Each runs in the same transaction as the version bump, under a lock (``BEGIN IMMEDIATE`` on
SQLite, an advisory lock on PostgreSQL), so two processes opening a new store at once cannot both
migrate it, and a failed migration leaves the previous version intact.

To change the schema: append a function here, update ``schema.py`` to the new shape, and add a
test that opens a store of the previous version. Keep migrations additive (new tables, new
columns, wider types): a store is shared by processes of different versions while they upgrade.

How a store is recognised (``recognise``), before anything is written to a database:

- it has a ``muxlang_meta`` table (schema v5 on): a muxlang store, at the version recorded there;
- it has no table at all: an empty database, where a command that writes may create a store;
- it has no ``muxlang_meta`` but exactly the tables an earlier muxlang created for the version its
  ``schema_version`` table records (``LEGACY_TABLES``: stores made before the marker existed):
  a muxlang store of that version, which gets the marker with its next upgrade (the first
  command that writes to it);
- anything else is someone else's database: refused by name and left exactly as it is.

Optuna's tables (``OPTUNA_TABLES``) may share the database (``tune --storage`` pointed at the
same PostgreSQL database as the store): they are neither ours nor a reason to refuse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import (Column, Float, Index, MetaData, String, Table, Text, UniqueConstraint,
                        inspect, select, text)
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
    for table in (s.datasets, s.items):
        table.to_metadata(meta)
    Table(  # as versions 1 to 5 had it (v6 added ``cost``)
        "samples", meta,
        *[Column(c.name, c.type, primary_key=c.primary_key, autoincrement=c.autoincrement,
                 nullable=c.nullable) for c in s.samples.columns if c.name != "cost"],
        UniqueConstraint("key_hash", "sample_index", name="uq_samples_key_index"),
        Index("ix_samples_model_prompt", "model", "prompt_hash"),
    )
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


def _v5_marker_and_text(conn: Connection) -> None:
    """The ``muxlang_meta`` marker table; names and ids as TEXT on PostgreSQL (they were
    VARCHAR(255): a longer model name or record id failed to store). SQLite does not enforce
    declared lengths, so only PostgreSQL's columns change (a type change without a rewrite)."""
    meta = MetaData()
    s.meta.to_metadata(meta).create(conn, checkfirst=True)
    conn.execute(s.meta.insert().values(key="store", value=s.MARKER))
    conn.execute(s.meta.insert().values(key="schema_version", value="0"))
    conn.execute(s.meta.insert().values(key="created_by", value=f"muxlang {_version()}"))
    if conn.dialect.name == "postgresql":
        for table, column in (("datasets", "name"), ("datasets", "gold_field"),
                              ("items", "item_key"), ("samples", "backend"),
                              ("samples", "model"), ("samples", "finish_reason"),
                              ("runs", "host")):
            conn.execute(text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE TEXT'))


def _v6_sample_cost(conn: Connection) -> None:
    """``samples.cost``: the USD a gateway reported for a sample (``x-litellm-response-cost``),
    NULL where none was (every sample stored before). Additive: a column with no default."""
    columns = {c["name"] for c in inspect(conn).get_columns("samples")}
    if "cost" not in columns:
        conn.execute(text("ALTER TABLE samples ADD COLUMN cost FLOAT"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("muxlang")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "(unknown version)"


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _v1_initial),
    Migration(2, "answer cache, gold keys, run summaries", _v2_answer_cache),
    Migration(3, "run owner (host, pid)", _v3_run_owner),
    Migration(4, "leases of concurrent collectors", _v4_collect_leases),
    Migration(5, "muxlang_meta marker; names and ids as TEXT", _v5_marker_and_text),
    Migration(6, "samples.cost: the cost a gateway reported", _v6_sample_cost),
]

LATEST = MIGRATIONS[-1].version
MARKER_VERSION = 5  # the version that added muxlang_meta
COST_VERSION = 6  # the version that added samples.cost

_V1 = {"schema_version", "datasets", "items", "samples", "runs"}
# the tables of each version made before the marker existed: how such a store is recognised
LEGACY_TABLES: dict[int, frozenset[str]] = {
    1: frozenset(_V1),
    2: frozenset(_V1 | {"answers", "gold_keys"}),
    3: frozenset(_V1 | {"answers", "gold_keys"}),
    4: frozenset(_V1 | {"answers", "gold_keys", "collect_leases"}),
}
OPTUNA_TABLES = frozenset({
    "alembic_version", "version_info", "studies", "study_directions", "study_user_attributes",
    "study_system_attributes", "trials", "trial_params", "trial_values",
    "trial_intermediate_values", "trial_user_attributes", "trial_system_attributes",
    "trial_heartbeats",
})


@dataclass(frozen=True)
class Recognition:
    """What a database holds: ``kind`` is "store" (``version`` > 0; ``marked``: it has the
    marker), "empty" (no tables but Optuna's) or "foreign" (``tables``: what is there)."""

    kind: str
    version: int = 0
    marked: bool = False
    tables: tuple[str, ...] = ()


def table_names(conn: Connection) -> set[str]:
    """The tables and views of the database (on PostgreSQL: of its current schema). Read from
    the catalog only: nothing is created or locked beyond a read."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                 "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"))
    else:
        rows = conn.execute(text(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND c.relkind IN ('r', 'v', 'm', 'p', 'f')"))
    return {row[0] for row in rows}


def recognise(conn: Connection) -> Recognition:
    """Whose database this is (see the module docstring); reads only."""
    tables = table_names(conn)
    if s.meta.name in tables:
        row = conn.execute(select(s.meta.c.value).where(s.meta.c.key == "schema_version")).first()
        try:
            version = int(row[0]) if row else 0
        except ValueError:
            version = 0
        if version <= 0:  # a table of that name that we did not write
            return Recognition("foreign", tables=tuple(sorted(tables)))
        return Recognition("store", version, True)
    ours = tables - OPTUNA_TABLES
    if not ours:
        return Recognition("empty")
    version = _legacy_version(conn) if "schema_version" in ours else 0
    if version in LEGACY_TABLES and ours == LEGACY_TABLES[version]:
        return Recognition("store", version, False)
    return Recognition("foreign", tables=tuple(sorted(tables)))


def _legacy_version(conn: Connection) -> int:
    try:
        row = conn.execute(s.schema_version.select().where(s.schema_version.c.id == 1)).first()
        return int(row.version) if row else 0
    except Exception:  # a schema_version table of someone else's shape
        return 0


def current_version(conn: Connection) -> int:
    """The schema version of the store in ``conn`` (0: none)."""
    found = recognise(conn)
    return found.version if found.kind == "store" else 0


def upgrade(conn: Connection, target: int = LATEST) -> tuple[int, int]:
    """Bring the store in ``conn`` (inside a write transaction; ``recognise`` said it is ours or
    empty) to ``target``; (before, after)."""
    before = current_version(conn)
    version = before
    s.schema_version.create(conn, checkfirst=True)
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
        if version >= MARKER_VERSION:
            conn.execute(s.meta.update().where(s.meta.c.key == "schema_version")
                         .values(value=str(version)))
    return before, version
