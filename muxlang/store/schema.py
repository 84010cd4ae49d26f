"""The store's tables (SQLAlchemy Core), as of the newest schema version.

``migrations.py`` creates and upgrades them; this module is what queries use. Text columns hold
canonical JSON where a value is structured (records, parameters), so both SQLite and PostgreSQL
store it the same way and hashes can be recomputed from what is stored.
"""
from __future__ import annotations

import json

from sqlalchemy import (BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)
from sqlalchemy.types import TypeDecorator

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

# Text that any Python string survives. PostgreSQL text cannot hold NUL, and neither database
# takes a lone surrogate (a model may answer "\ud800" in its JSON; a record may hold one): such
# a string is stored as ESCAPED + its ASCII JSON form and read back exactly. So is a string that
# happens to start with ESCAPED, so reading back never guesses. Everything else is stored as is.
ESCAPED = "\ufdd0json:"  # U+FDD0 is a noncharacter: no real text starts with it


def escape_text(value: str | None) -> str | None:
    if value is None:
        return None
    if "\x00" in value or value.startswith(ESCAPED):
        return ESCAPED + json.dumps(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ESCAPED + json.dumps(value)
    return value


def unescape_text(value: str | None) -> str | None:
    if value is not None and value.startswith(ESCAPED):
        return json.loads(value[len(ESCAPED):])
    return value


class SafeText(TypeDecorator):
    """TEXT holding any Python string (see ``escape_text``); what queries and DDL use."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return escape_text(value)

    def process_result_value(self, value, dialect):
        return unescape_text(value)

    def process_literal_param(self, value, dialect):
        return escape_text(value)

    @property
    def python_type(self):
        return str


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("id", Integer, primary_key=True),  # always 1: one row
    Column("version", Integer, nullable=False),  # kept in step with muxlang_meta's, so that an
    # older muxlang refuses a newer store instead of misreading it
)

# Schema v5: the marker. A database is a muxlang store when it has this table (see
# ``migrations.recognise``); ``key`` "store" = MARKER, "schema_version" = the version as text.
MARKER = "muxlang sample store"
meta = Table(
    "muxlang_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

datasets = Table(
    "datasets", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("content_hash", String(64), nullable=False),
    Column("source", SafeText),  # the file it was read from, for people
    Column("gold_field", Text),
    Column("n_items", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # Unix time
)

items = Table(
    "items", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("dataset_id", ID, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),  # 0-based line order in the dataset
    Column("item_key", SafeText, nullable=False),  # the record's id (any length, schema v5)
    Column("record", SafeText, nullable=False),  # canonical JSON
    Column("gold", SafeText),  # gold answer text (None: absent)
    Column("input_hash", String(64), nullable=False),  # record without gold: the replay prompt hash
    UniqueConstraint("dataset_id", "item_key", name="uq_items_dataset_key"),
    UniqueConstraint("dataset_id", "position", name="uq_items_dataset_position"),
)

runs = Table(
    "runs", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("command", String(32), nullable=False),  # collect | import | eval | run | tune
    Column("spec_path", SafeText),
    Column("spec_text", SafeText),
    Column("spec_hash", String(64)),
    Column("parameters", SafeText, nullable=False),  # canonical JSON
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("status", String(16), nullable=False),  # running | ok | failed | interrupted
    Column("summary", SafeText),  # canonical JSON (schema v2)
    Column("host", Text),  # the process that runs it (schema v3)
    Column("pid", Integer),
)

samples = Table(
    "samples", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False),  # SampleKey.hash
    Column("sample_index", Integer, nullable=False),
    Column("backend", SafeText, nullable=False),
    Column("model", SafeText, nullable=False),
    Column("params", Text, nullable=False),  # canonical JSON
    Column("prompt_hash", String(64), nullable=False),
    Column("text", SafeText),  # raw model output (None when the request failed)
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("latency", Float),  # seconds
    Column("finish_reason", SafeText),
    Column("error", SafeText),  # set when no usable response was received
    Column("created_at", Float, nullable=False),
    Column("run_id", ID),  # the run that stored it (None for imports before v2 / unknown)
    # USD a gateway reported for it (x-litellm-response-cost, shared by the samples of one reply)
    # or an import's "cost"; None: none reported, or what was reported was not a cost (schema v6)
    Column("cost", Float),
    UniqueConstraint("key_hash", "sample_index", name="uq_samples_key_index"),
    Index("ix_samples_model_prompt", "model", "prompt_hash"),
)

# Schema v2: answers cache. Extracted answers and equivalence keys depend on the task's extractor
# and equivalence rule (and on their code), so they are cached per (sample, signature) instead of
# being columns of ``samples``; gold keys likewise per (item, equivalence signature).
answers = Table(
    "answers", metadata,
    Column("sample_id", ID, ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True),
    Column("signature", String(64), primary_key=True),
    Column("answer", SafeText),  # extracted answer text (None: unreadable)
    Column("key", SafeText),  # equivalence key (None: unreadable / not understood)
)

gold_keys = Table(
    "gold_keys", metadata,
    Column("item_id", ID, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("signature", String(64), primary_key=True),
    Column("key", SafeText),
)

# Schema v4: leases of concurrent collectors. A worker claims the (request key, sample index) it
# is about to draw; the row says whose it is and until when (the database's clock, Unix seconds).
# An expired lease is free for anyone to take over: a worker killed mid-run loses its claims when
# they expire. Rows are deleted when their samples are stored (or the worker gives them up).
collect_leases = Table(
    "collect_leases", metadata,
    Column("key_hash", String(64), primary_key=True),  # SampleKey.hash
    Column("sample_index", Integer, primary_key=True),
    Column("owner", String(64), nullable=False),  # the claiming worker (a random id per process)
    Column("expires_at", Float, nullable=False),
    Index("ix_collect_leases_owner", "owner"),
)
