"""Store fixtures: a fresh store per test on SQLite (a temp file) and PostgreSQL (its own schema).

PostgreSQL: ``$MUXLANG_TEST_POSTGRES`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``;
each test gets a new schema (via the connection's search_path) dropped afterwards. The PostgreSQL
cases are skipped only when the server cannot be reached, and the skip says why.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from store_paths import GSM8K_QUESTIONS, GSM8K_SAMPLES, PG_URL  # noqa: E402

_pg_reason: list[str] = []


def postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else the reason (computed once)."""
    if not _pg_reason:
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("select 1"))
            engine.dispose()
            _pg_reason.append("")
        except Exception as error:  # noqa: BLE001
            _pg_reason.append(f"PostgreSQL not reachable at {PG_URL}: "
                              f"{str(error).splitlines()[0]}")
    return _pg_reason[0] or None


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


class PgSchema:
    def __init__(self) -> None:
        import sqlalchemy

        self.name = "t_" + uuid.uuid4().hex[:12]
        self.engine = sqlalchemy.create_engine(PG_URL)
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{self.name}"'))
        self.url = _pg_schema_url(self.name)

    def drop(self) -> None:
        import sqlalchemy

        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL of an empty store on each database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    reason = postgres_unreachable()
    if reason:
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    schema = PgSchema()
    try:
        yield schema.url
    finally:
        schema.drop()


@pytest.fixture
def store(store_url):
    from muxlang.store import Store

    st = Store(store_url)
    yield st
    st.close()


@pytest.fixture(scope="session")
def gsm8k_store_path(tmp_path_factory):
    """A SQLite store with the shipped ZeroEval GSM8K data imported once per session."""
    from muxlang.store import Store, import_samples

    path = tmp_path_factory.mktemp("gsm8k") / "gsm8k.sqlite"
    with Store(str(path)) as st:
        result = import_samples(st, GSM8K_SAMPLES, GSM8K_QUESTIONS)
    assert result.samples_written == 14509
    return path


@pytest.fixture
def gsm8k_store(gsm8k_store_path):
    from muxlang.store import Store

    st = Store(str(gsm8k_store_path))
    yield st
    st.close()
