"""The ``Store``: connection handling, schema upgrades, the sample cache, datasets and runs."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from muxlang.errors import DataError, DatasetError, MuxError, StoreError, shorten
from muxlang.jsonl import iter_records, read_records  # noqa: F401 - re-exported
from muxlang.samples import SampleKey, canonical_json, checked_cost, record_input_hash, sha256
from muxlang.store import migrations
from muxlang.store import schema as s
from muxlang.store.urls import redact_url, resolve_url

CHUNK = 500  # rows per IN (...) lookup
BATCH = 2000  # rows per executemany
COPY_THRESHOLD = 200  # PostgreSQL: from this many rows on, COPY through a temporary table


@dataclass(frozen=True)
class StoredSample:
    id: int
    index: int
    text: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency: float | None
    finish_reason: str | None
    error: str | None
    cost: float | None = None  # USD a gateway reported for it (schema v6; None: none)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class NewSample:
    """A sample to store. ``error`` set = no usable response (it will be retried later)."""

    key: SampleKey
    index: int
    text: str | None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    run_id: int | None = None
    cost: float | None = None  # USD reported for it (kept only if ``checked_cost`` takes it)


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    content_hash: str
    n_items: int
    gold_field: str | None
    source: str | None


@dataclass(frozen=True)
class Item:
    id: int
    position: int
    key: str  # the record's id
    record: dict
    gold: str | None
    input_hash: str


MAX_NAME = 512  # characters of a record id, model name, backend or dataset name (both databases:
# PostgreSQL indexes these columns, and an index entry holds at most about 2,700 bytes)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised via every test
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        # per connection only: nothing here changes the file (the journal mode is set once, by
        # Store.upgrade, after the file was recognised as a store)
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across kill -9
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # pragma: no cover
        # Write transactions (Store.transaction) take the write lock up front with IMMEDIATE: no
        # read-then-write upgrade deadlocks between processes; waiting writers are served by
        # busy_timeout. Reads use a deferred BEGIN: under WAL they never block or wait.
        if connection.get_execution_options().get("muxlang_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


_DAMAGED = ("malformed", "disk i/o error", "not a database", "file is encrypted")


def _error_setup(store: "Store", path: str | None) -> None:
    """A damaged SQLite file fails wherever a query meets a bad page: say so, with the file,
    wherever that is (not as an internal error of whichever command read it)."""
    @event.listens_for(store.engine, "handle_error")
    def _on_error(context):  # pragma: no cover - exercised by the damaged-file test
        original = context.original_exception
        reason = str(original).strip().splitlines()[0] if str(original).strip() else ""
        if path and type(original).__module__ == "sqlite3" and any(
                word in reason.lower() for word in _DAMAGED):
            raise StoreError(f"store {path} is damaged or not a muxlang store ({reason}): "
                             "restore it from a backup (`sqlite3 FILE .recover` saves what can "
                             "be read)", url=store.display_url, opening=True) from None


def _read_only(path: Path) -> bool:
    """Whether a SQLite file is meant to be read only: it or its folder has no write permission
    bit (checked on the bits, not with access(): root may write anything)."""
    try:
        return not (path.stat().st_mode & 0o222) or not (path.parent.stat().st_mode & 0o222)
    except OSError:
        return False


READABLE_VERSION = 2  # the oldest schema a reader can use as it is (answers and gold keys exist)


def _read_only_connector(path: Path):
    """A connection that cannot write the file: ``mode=ro``; ``immutable`` as well when no WAL
    is pending (no -wal file), so that not even the -shm file is created beside it."""
    import sqlite3
    from urllib.parse import quote

    def connect():
        wal = Path(str(path) + "-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        uri = f"file:{quote(str(path))}?mode=ro" + ("" if pending else "&immutable=1")
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect


class Store:
    """A sample store at a SQLAlchemy URL (see the package docstring for the API).

    A store is recognised by its ``muxlang_meta`` table (or, made by an earlier muxlang, by its
    exact set of tables: ``migrations.recognise``): a database that holds anything else is
    refused by name before anything in it is touched.

    ``must_exist=True`` opens it for a command that only reads (eval, tune, run's tie-breaks):
    the store must exist already, and nothing is created, migrated or switched (journal mode);
    a SQLite file or folder without write permission is opened read-only. Such a store writes
    its caches (answers, gold keys, run records) only when it can (``writable``): current
    schema, writable file; otherwise it computes them and goes on.
    """

    def __init__(self, url: str | None = None, *, upgrade: bool = True, echo: bool = False,
                 must_exist: bool = False):
        """``must_exist``: opened by a command that only reads (above): a SQLite file that does
        not exist is an error (readers such as eval should not create an empty store on a
        mistyped path), and so is an empty database."""
        self.url = resolve_url(url)
        self.display_url = redact_url(self.url)
        self.reader = must_exist
        self.writable = not must_exist
        # questions files a reader was given that the store does not hold (``read_dataset``):
        # negative dataset id -> their items, kept in memory, never written
        self._in_memory: dict[int, list[Item]] = {}
        self.path: Path | None = None
        read_only = False
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            self.path = Path(self.url.split(":///", 1)[1].split("?", 1)[0])
        if must_exist and self.path is not None:
            if not self.path.exists():
                raise StoreError(f"store {self.display_url} does not exist: import or collect "
                                 "samples into it first, or open the store that holds them",
                                 url=self.display_url, missing=True)
            read_only = _read_only(self.path)
        try:
            if self.url.startswith("sqlite"):
                memory = self.url in ("sqlite://", "sqlite:///:memory:")
                if not memory and self.path is not None and not self.path.parent.exists():
                    raise StoreError(f"store {self.display_url}: directory "
                                     f"{self.path.parent} does not exist",
                                     url=self.display_url, opening=True)
                # check_same_thread off: the pool hands a connection to one thread at a time,
                # and the runtime cache works from a worker thread.
                options: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
                if read_only:
                    options["creator"] = _read_only_connector(self.path)
                self.engine = create_engine(
                    self.url, echo=echo, connect_args={"check_same_thread": False}, **options)
                _sqlite_setup(self.engine)
            else:
                self.engine = create_engine(self.url, echo=echo, pool_pre_ping=True)
        except MuxError:
            raise
        except Exception as error:  # bad URL, unknown driver
            raise StoreError(f"cannot open store {self.display_url}: {error}",
                             url=self.display_url, opening=True) from None
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"store {self.display_url}: unsupported database '{self.dialect}' "
                             "(use SQLite or PostgreSQL)", url=self.display_url, opening=True)
        _error_setup(self, str(self.path) if self.path is not None else None)
        self._version: int | None = None
        if must_exist:
            self._open_to_read(read_only)
        elif upgrade:
            self.upgrade()

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed on normal exit, rolled back on any exception."""
        try:
            with self.engine.connect().execution_options(muxlang_write=True) as conn:
                with conn.begin():
                    yield conn
        except OperationalError as error:
            raise StoreError(f"store {self.display_url}: {_reason(error)}",
                             url=self.display_url) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def _refuse(self, found: migrations.Recognition) -> StoreError:
        shown = ", ".join(found.tables[:8]) + (f", … ({len(found.tables)} tables)"
                                                if len(found.tables) > 8 else "")
        where = "file" if self.dialect == "sqlite" else "database"
        return StoreError(f"{self.display_url} is not a muxlang store: the {where} holds other "
                          f"tables ({shown}) and no muxlang_meta table; muxlang leaves it as it "
                          "is. Give the store a new file or an empty database",
                          url=self.display_url, opening=True)

    def _newer(self, version: int) -> StoreError:
        return StoreError(f"store {self.display_url} has schema version {version}, newer than "
                          f"this muxlang understands ({migrations.LATEST}): upgrade muxlang",
                          url=self.display_url)

    def _cannot_open(self, error: DBAPIError) -> StoreError:
        return StoreError(f"cannot open store {self.display_url}: {_reason(error)}"
                          + (" (is it a muxlang store? a SQLite store is a database file, "
                             "not a data file)" if self.dialect == "sqlite" else ""),
                          url=self.display_url, opening=True)

    def upgrade(self, target: int = migrations.LATEST) -> tuple[int, int]:
        """Create the store in an empty database, or bring a store's schema to ``target``; a
        database that is not a muxlang store is refused and left as it is. This is the first
        statement a command that writes runs against a store, so a path that is not a database
        (``--store samples.jsonl``: "file is not a database"), or a PostgreSQL database the user
        may not write to, surfaces here: a user error with the store's (redacted) URL, not an
        internal error."""
        try:
            with self.transaction() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7215033)"))
                found = migrations.recognise(conn)
                if found.kind == "foreign":
                    raise self._refuse(found)
                if found.version > migrations.LATEST:
                    raise self._newer(found.version)
                result = migrations.upgrade(conn, target)
        except DatabaseError as error:
            raise self._cannot_open(error) from None
        if self.dialect == "sqlite" and self.path is not None:
            self._use_wal()
        self._version = result[1]
        self.writable = True
        return result

    def _use_wal(self) -> None:
        """Switch a SQLite store to WAL (once: the mode is kept in the file): readers never wait
        for writers. Only ever done to a file recognised as a store."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                try:
                    cursor.execute("PRAGMA journal_mode = WAL")
                except Exception:  # another process switches it at this moment: it is done
                    pass
            cursor.close()
        finally:
            raw.close()

    def _open_to_read(self, read_only: bool) -> None:
        """Recognise the store for a command that only reads; nothing is written."""
        try:
            with self.engine.connect() as conn:
                found = migrations.recognise(conn)
                conn.rollback()
        except DatabaseError as error:
            raise self._cannot_open(error) from None
        if found.kind == "foreign":
            raise self._refuse(found)
        if found.kind == "empty":
            raise StoreError(f"store {self.display_url} is empty: import or collect samples "
                             "into it first, or open the store that holds them",
                             url=self.display_url, missing=True)
        if found.version > migrations.LATEST:
            raise self._newer(found.version)
        if found.version < READABLE_VERSION:
            raise StoreError(f"store {self.display_url} has schema version {found.version}, "
                             "too old to read without upgrading it; a command that writes to it "
                             "(import, collect) upgrades it", url=self.display_url)
        self._version = found.version
        # a reader keeps its caches in the store only where that changes nothing else: a
        # current, writable store, in WAL mode on SQLite (where its writes never wait for its
        # own reads; the mode is the store's, a reader does not switch it)
        self.writable = not read_only and found.version == migrations.LATEST
        if self.writable and self.dialect == "sqlite" and self.path is not None:
            with self.engine.connect() as conn:
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                conn.rollback()
            self.writable = str(mode).lower() == "wal"

    @property
    def version(self) -> int:
        with self.engine.connect() as conn:
            return migrations.current_version(conn)

    @property
    def has_costs(self) -> bool:
        """Whether its samples have a ``cost`` column (schema v6 on). A reader of an older store
        reads none; nothing writes one into an older store (only tests build those)."""
        version = self._version if self._version is not None else self.version
        return version >= migrations.COST_VERSION

    def insert(self, table):
        """An INSERT that supports ``on_conflict_do_nothing`` on this dialect."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # -- the sample cache ----------------------------------------------------------------------

    def get_samples_many(self, keys: Iterable[SampleKey], k: int | None = None,
                         conn: Connection | None = None) -> dict[str, list[StoredSample]]:
        """Stored samples per ``key.hash``, sorted by index (only indices < k when k is given)."""
        hashes = sorted({key.hash for key in keys})
        found: dict[str, list[StoredSample]] = {h: [] for h in hashes}
        c = s.samples.c
        columns = [c.key_hash, c.id, c.sample_index, c.text, c.tokens_in, c.tokens_out, c.latency,
                   c.finish_reason, c.error, *([c.cost] if self.has_costs else [])]
        with self._connection(conn) as cx:
            for start in range(0, len(hashes), CHUNK):
                query = select(*columns).where(in_values(self.dialect, c.key_hash, hashes[start:start + CHUNK]))
                if k is not None:
                    query = query.where(c.sample_index < k)
                for row in cx.execute(query):
                    found[row.key_hash].append(StoredSample(*row[1:]))
        for rows in found.values():
            rows.sort(key=lambda r: r.index)
        return found

    def get_samples(self, key: SampleKey, k: int | None = None) -> list[StoredSample]:
        """The stored samples of one request key, by index (indices < k when given)."""
        return self.get_samples_many([key], k)[key.hash]

    def missing_indices(self, key: SampleKey, k: int,
                        stored: Sequence[StoredSample] | None = None) -> list[int]:
        """Indices in ``range(k)`` with no successful stored sample: what still has to be drawn."""
        if stored is None:
            stored = self.get_samples(key, k)
        have = {sample.index for sample in stored if sample.ok}
        return [i for i in range(k) if i not in have]

    def put_samples(self, new: Iterable[NewSample], conn: Connection | None = None) -> int:
        """Store samples in one transaction (or in ``conn``'s). Idempotent: a (key, index) that is
        already stored successfully is left as it is (ON CONFLICT DO NOTHING); a stored *error*
        at that (key, index) is replaced by a successful sample. Returns the rows written."""
        rows = []
        now = time.time()
        for sample in new:
            if sample.index < 0:
                raise ValueError(f"sample index {sample.index} < 0")
            key = sample.key
            if len(key.model) > MAX_NAME or len(key.backend) > MAX_NAME:
                check_name("model id", key.model)
                check_name("backend name", key.backend)
            rows.append({
                "key_hash": key.hash, "sample_index": int(sample.index), "backend": key.backend,
                "model": key.model, "params": key.params, "prompt_hash": key.prompt_hash,
                "text": sample.text, "tokens_in": sample.tokens_in, "tokens_out": sample.tokens_out,
                "latency": sample.latency, "finish_reason": sample.finish_reason,
                "error": sample.error, "created_at": now, "run_id": sample.run_id,
                "cost": checked_cost(sample.cost) if sample.error is None else None,
            })
        if not rows:
            return 0
        with self._transaction(conn) as cx:
            return self._put_rows(cx, rows, replace_errors=True)

    def _put_rows(self, cx: Connection, rows: list[dict], replace_errors: bool) -> int:
        c = s.samples.c
        if rows and "cost" in rows[0] and not self.has_costs:  # a store older than v6
            rows = [{k: v for k, v in row.items() if k != "cost"} for row in rows]
        if replace_errors:
            good = {(r["key_hash"], r["sample_index"]) for r in rows if r["error"] is None}
            hashes = sorted({h for h, _ in good})
            stale: list[int] = []
            for start in range(0, len(hashes), CHUNK):
                query = select(c.id, c.key_hash, c.sample_index).where(
                    in_values(self.dialect, c.key_hash, hashes[start:start + CHUNK]), c.error.isnot(None))
                stale += [r.id for r in cx.execute(query) if (r.key_hash, r.sample_index) in good]
            for start in range(0, len(stale), CHUNK):
                ids = stale[start:start + CHUNK]
                cx.execute(s.answers.delete().where(in_values(self.dialect, s.answers.c.sample_id, ids)))
                cx.execute(s.samples.delete().where(in_values(self.dialect, c.id, ids)))
        return self.insert_ignore(cx, s.samples, rows, ["key_hash", "sample_index"])

    def insert_ignore(self, cx: Connection, table, rows: list[dict], conflict: list[str]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING of many rows in ``cx``'s transaction; rows written.

        PostgreSQL, large batches: COPY into a temporary table, then one INSERT ... SELECT (psycopg
        parses a multi-VALUES statement of thousands of parameters slowly). Otherwise batched
        executemany.
        """
        if not rows:
            return 0
        if self.dialect == "postgresql" and len(rows) >= COPY_THRESHOLD:
            return self._copy_insert_ignore(cx, table, rows, conflict)
        statement = self.insert(table).on_conflict_do_nothing(index_elements=conflict)
        if self.dialect == "postgresql":
            # psycopg's executemany reports no row count: RETURNING lists what was inserted
            statement = statement.returning(*[table.c[name] for name in conflict])
        written = 0
        for start in range(0, len(rows), BATCH):
            result = cx.execute(statement, rows[start:start + BATCH])
            written += len(result.all()) if self.dialect == "postgresql" else max(result.rowcount, 0)
        return written

    def _copy_insert_ignore(self, cx: Connection, table, rows: list[dict], conflict: list[str]) -> int:
        columns = list(rows[0])
        temp = f"muxlang_tmp_{uuid.uuid4().hex[:12]}"
        names = ", ".join(f'"{c}"' for c in columns)
        raw = cx.connection.driver_connection
        with raw.cursor() as cursor:
            cursor.execute(f'CREATE TEMPORARY TABLE "{temp}" (LIKE "{table.name}" INCLUDING DEFAULTS) '
                           "ON COMMIT DROP")
            # COPY takes the values as they are: escape what SafeText escapes on an INSERT
            escaped = [isinstance(table.c[c].type, s.SafeText) for c in columns]
            with cursor.copy(f'COPY "{temp}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row([s.escape_text(row[c]) if e else row[c]
                                    for c, e in zip(columns, escaped)])
            cursor.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{temp}" '
                           f'ON CONFLICT ({", ".join(conflict)}) DO NOTHING')
            written = cursor.rowcount
            cursor.execute(f'DROP TABLE "{temp}"')
        return max(written, 0)

    def count_samples(self, model: str | None = None) -> int:
        query = select(func.count()).select_from(s.samples)
        if model is not None:
            query = query.where(s.samples.c.model == model)
        with self.engine.connect() as cx:
            return int(cx.execute(query).scalar_one())

    def analyze(self) -> None:
        """Refresh the query planner's statistics (PostgreSQL; SQLite: ANALYZE too)."""
        with self.transaction() as cx:
            cx.execute(text("ANALYZE"))

    # -- datasets ------------------------------------------------------------------------------

    def put_dataset(self, name: str, records: Sequence[Mapping[str, Any]], *,
                    gold_field: str | None = "answer", source: str | None = None,
                    conn: Connection | None = None) -> DatasetInfo:
        """Register a dataset (idempotent on identical content; an error on a name clash)."""
        keys = [item_key_of(record, i) for i, record in enumerate(records)]
        content_hash = dataset_hash(records)
        with self._transaction(conn) as cx:
            existing = self._dataset_row(cx, name)
            if existing is None:
                check_name("dataset name", name)
                for position, key in enumerate(keys):
                    check_name(f"dataset {shorten(name)}: record {position + 1}'s id", key)
                # ON CONFLICT DO NOTHING: two workers registering the same new dataset at once
                # (PostgreSQL; SQLite's write lock serialises them) both end here, one inserts,
                # the other waits for its commit, inserts nothing and reads the row back
                statement = self.insert(s.datasets).on_conflict_do_nothing(
                    index_elements=["name"]).values(
                    name=name, content_hash=content_hash, source=source, gold_field=gold_field,
                    n_items=len(records), created_at=time.time()).returning(s.datasets.c.id)
                inserted = cx.execute(statement).first()
                if inserted is None:
                    existing = self._dataset_row(cx, name)
            if existing is not None:
                if existing.content_hash != content_hash:
                    raise DatasetError(
                        f"dataset {shorten(name)} is already in the store with different content "
                        f"(stored {existing.content_hash[:12]}, this file {content_hash[:12]}); "
                        "give this one another name", dataset=name, clash=True)
                return existing
            dataset_id = inserted[0]
            rows = []
            for position, (key, record) in enumerate(zip(keys, records)):
                rows.append({
                    "dataset_id": dataset_id, "position": position, "item_key": key,
                    "record": canonical_json(record), "gold": gold_of(record, gold_field),
                    "input_hash": record_input_hash(record, gold_field),
                })
            self.insert_ignore(cx, s.items, rows, ["dataset_id", "item_key"])
            return self._dataset_row(cx, name)

    def _dataset_row(self, cx: Connection, name: str) -> DatasetInfo | None:
        d = s.datasets.c
        row = cx.execute(select(d.id, d.name, d.content_hash, d.n_items, d.gold_field, d.source)
                         .where(d.name == name)).first()
        return DatasetInfo(*row) if row else None

    def get_dataset(self, name: str) -> DatasetInfo | None:
        with self.engine.connect() as cx:
            return self._dataset_row(cx, name)

    def find_dataset_by_hash(self, content_hash: str) -> DatasetInfo | None:
        d = s.datasets.c
        with self.engine.connect() as cx:
            row = cx.execute(select(d.id, d.name, d.content_hash, d.n_items, d.gold_field, d.source)
                             .where(d.content_hash == content_hash).order_by(d.id)).first()
        return DatasetInfo(*row) if row else None

    def list_datasets(self) -> list[DatasetInfo]:
        d = s.datasets.c
        with self.engine.connect() as cx:
            rows = cx.execute(select(d.id, d.name, d.content_hash, d.n_items, d.gold_field, d.source)
                              .order_by(d.name)).all()
        return [DatasetInfo(*row) for row in rows]

    def read_dataset(self, name: str, records: Sequence[Mapping[str, Any]], *,
                     gold_field: str | None = "answer", source: str | None = None) -> DatasetInfo:
        """A dataset this store does not hold, for a command that only reads it (eval or tune
        given a questions file on a store it cannot write: read-only, or of an older schema):
        kept in memory under a negative id, its items too; samples are still found by their
        prompts. Nothing is written."""
        number = -(len(self._in_memory) + 1)
        base = number * 10 ** 9  # item ids: negative, unique across in-memory datasets
        items = []
        for position, record in enumerate(records):
            items.append(Item(base - position, position, item_key_of(record, position),
                              json.loads(canonical_json(record)), gold_of(record, gold_field),
                              record_input_hash(record, gold_field)))
        self._in_memory[number] = items
        return DatasetInfo(number, name, dataset_hash(records), len(records), gold_field, source)

    def items(self, dataset: DatasetInfo | str) -> list[Item]:
        info = self.require_dataset(dataset)
        if info.id in self._in_memory:
            return list(self._in_memory[info.id])
        i = s.items.c
        with self.engine.connect() as cx:
            rows = cx.execute(select(i.id, i.position, i.item_key, i.record, i.gold, i.input_hash)
                              .where(i.dataset_id == info.id).order_by(i.position)).all()
        return [Item(r.id, r.position, r.item_key, json.loads(r.record), r.gold, r.input_hash)
                for r in rows]

    def require_dataset(self, dataset: DatasetInfo | str) -> DatasetInfo:
        if isinstance(dataset, DatasetInfo):
            return dataset
        info = self.get_dataset(dataset)
        if info is None:
            from muxlang.errors import did_you_mean

            names = [d.name for d in self.list_datasets()]
            hint = did_you_mean(dataset, names)
            known = f" (stored: {', '.join(names)})" if names else " (the store has no datasets)"
            raise DatasetError(f"no dataset {shorten(dataset)} in store {self.display_url}{known}"
                               + (f"; {hint}" if hint else ""), dataset=dataset, known=names)
        return info

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, command: str, parameters: Mapping[str, Any], *, spec_path: str | None = None,
                  spec_text: str | None = None) -> int | None:
        """Record a run as "running" (this process's host and pid kept); runs of this host left
        "running" by processes that no longer exist are marked "killed" first. A store opened
        only to read that cannot keep the record (``writable`` false) records nothing: None."""
        if not self.writable:
            return None
        self.reap_runs()
        with self.transaction() as cx:
            return int(cx.execute(s.runs.insert().values(
                command=command, spec_path=spec_path, spec_text=spec_text,
                spec_hash=sha256(spec_text) if spec_text is not None else None,
                parameters=canonical_json(dict(parameters)), started_at=time.time(),
                status="running", host=socket.gethostname(), pid=os.getpid()
            )).inserted_primary_key[0])

    def reap_runs(self) -> int:
        """Mark "killed" the runs of this host still "running" whose process is gone."""
        r = s.runs.c
        host = socket.gethostname()
        with self.engine.connect() as cx:
            rows = cx.execute(select(r.id, r.pid).where(r.status == "running", r.host == host,
                                                        r.pid.isnot(None))).all()
        dead = [row.id for row in rows if row.pid != os.getpid() and not _alive(row.pid)]
        if dead:
            with self.transaction() as cx:
                cx.execute(s.runs.update().where(r.id.in_(dead), r.status == "running")
                           .values(status="killed"))
        return len(dead)

    def finish_run(self, run_id: int | None, status: str,
                   summary: Mapping[str, Any] | None = None) -> None:
        if run_id is None:  # start_run recorded nothing
            return
        with self.transaction() as cx:
            cx.execute(s.runs.update().where(s.runs.c.id == run_id).values(
                status=status, ended_at=time.time(),
                summary=canonical_json(dict(summary)) if summary is not None else None))

    def runs(self, limit: int = 20) -> list[dict]:
        with self.engine.connect() as cx:
            rows = cx.execute(select(s.runs).order_by(s.runs.c.id.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as cx:
                yield cx

    @contextmanager
    def _transaction(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.transaction() as cx:
                yield cx


def in_values(dialect: str, column, values: Sequence[Any]):
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter however many
    values (psycopg converts a statement with thousands of parameters slowly)."""
    if dialect == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except OSError:
        return True
    return True


def _reason(error: DBAPIError) -> str:
    original = getattr(error, "orig", None)
    return str(original or error).strip().splitlines()[0]


def check_name(what: str, value: str) -> None:
    """A record id, model, backend or dataset name the store can keep (``MAX_NAME``)."""
    if len(value) > MAX_NAME:
        raise DatasetError(f"{what} has {len(value):,} characters, more than the {MAX_NAME} a "
                           f"store keeps: {shorten(value)}")


def gold_text(value: Any) -> str | None:
    """A gold value as the store keeps it: its text, or its canonical JSON."""
    if value is None or isinstance(value, str):
        return value
    return canonical_json(value)


def gold_of(record: Mapping[str, Any], gold_field: str | None) -> str | None:
    """A record's gold field as the store keeps it (``gold_text``), None without one."""
    return gold_text(record.get(gold_field)) if gold_field else None


def item_key_of(record: Mapping[str, Any], position: int) -> str:
    value = record.get("id")
    return str(position) if value is None else str(value)


def dataset_hash(records: Sequence[Mapping[str, Any]]) -> str:
    """Content hash of a dataset: its records' canonical JSON, in order."""
    return sha256("\n".join(canonical_json(r) for r in records))


def load_dataset_file(store: Store, path: str | Path, *, name: str | None = None,
                      gold_field: str | None = "answer") -> DatasetInfo:
    """Register the dataset in a questions file (by content hash: an identical stored dataset is
    reused under its stored name). Duplicate ids are a DataError."""
    lines = read_records(path)
    seen: dict[str, int] = {}
    for position, (line, record) in enumerate(lines):
        key = item_key_of(record, position)
        if key in seen:
            raise DataError(str(path), line, f"field 'id': duplicate id {shorten(key)} "
                                             f"(first on line {seen[key]})")
        seen[key] = line
    records = [record for _, record in lines]
    if name is None or not store.writable:
        existing = store.find_dataset_by_hash(dataset_hash(records))
        if existing is not None:
            return existing
        name = name or default_dataset_name(path)
    for line, record in lines:
        key = item_key_of(record, 0)
        if len(key) > MAX_NAME:
            raise DataError(str(path), line, f"field 'id': {len(key):,} characters, more than "
                                             f"the {MAX_NAME} a store keeps")
    if not store.writable:  # read-only, or an older schema this command does not upgrade
        return store.read_dataset(name, records, gold_field=gold_field, source=str(path))
    return store.put_dataset(name, records, gold_field=gold_field, source=str(path))


def resolve_dataset(store: Store, value: str, gold_field: str | None) -> DatasetInfo:
    """A store dataset by name, or a questions file registered by content hash.

    ``eval`` and ``tune`` both take either, so a user can point them at the file beside the data
    without a separate import step; the file's questions must still have stored samples.
    """
    if _is_file(value):
        return load_dataset_file(store, value, gold_field=gold_field or "answer")
    info = store.get_dataset(value)
    if info is not None:
        return info
    from muxlang.errors import did_you_mean

    names = [d.name for d in store.list_datasets()]
    hint = did_you_mean(value, names)
    raise DatasetError(f"{shorten(value)} is neither a dataset in store {store.display_url} nor a file"
                       + (f"; {hint}" if hint else
                          f" (stored datasets: {', '.join(names)})" if names else
                          " (the store has no datasets yet)"), dataset=value, known=names)


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long for a path, a NUL in it
        return False


def default_dataset_name(path: str | Path) -> str:
    """``zeroeval-gsm8k-questions.jsonl`` -> ``zeroeval-gsm8k``."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".ndjson"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffix in ("-questions", "_questions", "-samples", "_samples"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "dataset"
