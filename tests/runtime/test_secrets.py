"""Keys never reach a terminal, an output file or the store, whoever echoes them (issue 10, items
7 and 8): masked before any cut, in every message, in sample texts, in the last-resort error."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid

import pytest

from muxlang import ir
from muxlang.cli import main
from muxlang.runtime.backends import RetryPolicy
from muxlang.runtime.executor import Runtime
from muxlang.runtime.secrets import MASK, clip, register_key_env, scrub
from muxlang.samples import Sample, SampleFailure
from tests.support.helpers import KEY, KEY_ENV, read_jsonl, spec_text

# a key of no known shape (not sk-..., not after "Bearer"): only knowing its value masks it
PLAIN_KEY = "mxk_5b1f0c9e7a3d4e2f8a6c1b9d0e7f3a5c2b4d"


def leaks(text: str, key: str = PLAIN_KEY, window: int = 8) -> list[str]:
    """Every piece of ``key`` of ``window`` characters that ``text`` holds."""
    return [key[i:i + window] for i in range(len(key) - window + 1) if key[i:i + window] in text]


def store_dump(path) -> str:
    with sqlite3.connect(path) as db:
        return "\n".join(db.iterdump())


@pytest.fixture
def plain_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLAIN_KEY)
    register_key_env(KEY_ENV)
    return PLAIN_KEY


def run_cli(*args) -> int:
    return main(["run", *map(str, args), "--no-progress"])


def test_clip_masks_before_it_cuts(plain_key):
    text = "e" * 390 + PLAIN_KEY + " more"
    assert leaks(clip(text, 400)) == []
    assert clip(text, 400) == "e" * 390 + MASK + " more"
    assert clip("x" * 500, 400) == "x" * 400 + "..."


def test_a_key_crossing_the_400_character_cut_of_an_error_text_is_masked_whole(
        server, plain_key, write_spec, write_records, tmp_path, capsys):
    # the server's message puts the key across character 400, where error texts are cut
    server.add_fault("400", count=None, message="e" * 385 + PLAIN_KEY + " was refused")
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(3)])
    out, store = tmp_path / "out.jsonl", tmp_path / "store.sqlite"
    assert run_cli(spec, "--input", records, "--output", out, "--store", store) == 1
    assert main(["collect", str(spec), "--dataset", str(records), "--store", str(store),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    text = out.read_text()
    assert "HTTP 400: eeee" in text and MASK in text  # the message is there, masked
    for where in (text, err, store_dump(store)):
        assert leaks(where) == []


def test_a_key_crossing_the_120_character_cut_of_a_body_snippet_is_masked_whole(
        server, plain_key):
    server.add_fault("malformed", count=None,
                     body='{"choices": "' + "x" * 90 + PLAIN_KEY + '"}')
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url,
                         api_key_env=KEY_ENV, retries=1, timeout=5.0)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)

    async def go():
        async with Runtime([backend], policy=RetryPolicy(base=0.01, cap=0.02)) as runtime:
            return await runtime.sample(model, [{"role": "user", "content": "q"}], [0])

    (failure,) = asyncio.run(go())
    assert isinstance(failure, SampleFailure)
    assert "malformed response body" in failure.error and "xxxx" in failure.error
    assert leaks(failure.error) == []


def test_a_reply_echoing_the_key_is_masked_before_it_is_stored_or_printed(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.answer = lambda model, prompt, seed: f"You sent me {KEY}, so: #### 4"
    spec = write_spec(spec_text(server.openai_url, samples=2))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(3)])
    store = tmp_path / "store.sqlite"
    assert run_cli(spec, "--input", records, "--output", "-", "--store", store) == 0
    assert main(["collect", str(spec), "--dataset", str(records), "--store", str(store),
                 "--samples", "3", "--no-progress"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["answer"] for line in lines] == ["4"] * 3  # the answer itself is untouched
    assert lines[0]["text"] == f"You sent me {MASK}, so: #### 4"
    dump = store_dump(store)
    assert f"You sent me {MASK}" in dump
    for where in (captured.out, captured.err, dump):
        assert KEY not in where and leaks(where, KEY) == []


def test_a_reply_echoing_the_key_with_a_nul_never_shows_the_key(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.answer = lambda model, prompt, seed: f"key {KEY}\x00 then #### 2"
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": 1, "question": "q"}])
    out, store = tmp_path / "out.jsonl", tmp_path / "store.sqlite"
    run_cli(spec, "--input", records, "--output", out, "--store", store)
    err = capsys.readouterr().err
    assert "internal error" not in err
    for where in (out.read_text(), err, store_dump(store)):
        assert KEY not in where and leaks(where, KEY) == []


def test_the_last_resort_internal_error_is_scrubbed(api_key, monkeypatch, capsys, tmp_path):
    import muxlang.commands.check as check

    def broken(args):
        raise ValueError(f"the store refused a text holding {KEY}\x00 (and " + "z" * 3000 + ")")

    monkeypatch.setattr(check, "run", broken)
    assert main(["check", str(tmp_path / "x.mux")]) == 70
    err = capsys.readouterr().err
    assert err.startswith("internal error: ValueError: the store refused a text holding ***")
    assert KEY not in err and leaks(err, KEY) == [] and len(err) < 2300


def test_a_user_error_that_quotes_the_key_is_scrubbed(api_key, monkeypatch, capsys, tmp_path):
    import muxlang.commands.check as check
    from muxlang.errors import MuxError

    def refuses(args):
        raise MuxError(f"cannot write /tmp/{KEY}/out.jsonl")

    monkeypatch.setattr(check, "run", refuses)
    assert main(["check", str(tmp_path / "x.mux")]) == 1
    err = capsys.readouterr().err
    assert "cannot write /tmp/***/out.jsonl" in err and KEY not in err


def test_sample_texts_lose_only_real_keys_not_key_shaped_text(plain_key):
    text = f"use Bearer abcdefgh123 or sk-abcdefghijkl, not {PLAIN_KEY}"
    assert scrub(text, shapes=False) == f"use Bearer abcdefgh123 or sk-abcdefghijkl, not {MASK}"
    assert "abcdefgh123" not in scrub(text) and "sk-abcdefghijkl" not in scrub(text)


def test_a_failed_run_keeps_no_key_in_the_runs_table_its_results_or_its_output(
        server, plain_key, write_spec, write_records, tmp_path, capfd):
    """The session ends a failed run (run, collect, eval) with the error's text in the store's
    runs table: masked there like every message, whoever's error it was. Here the backend
    refuses every request quoting the key, and the caller's progress hook fails quoting it too
    (say, a dashboard URL that carries the key): the run is recorded as failed, keyless."""
    import muxlang

    server.add_fault("401", count=None, message=f"key {PLAIN_KEY} is not valid for this model")
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(3)])
    store = tmp_path / "store.sqlite"
    session = muxlang.Session(store)

    results = session.run(spec, [{"id": 1, "question": "q1"}])
    assert results[0].error is not None and MASK in results[0].error  # told, masked

    def report(totals):
        raise RuntimeError(f"POST https://dash.example/progress?key={PLAIN_KEY} refused "
                           f"({totals.failed} failed so far)")

    with pytest.raises(RuntimeError, match="dash.example"):
        session.collect(spec, str(records), on_progress=report)

    with sqlite3.connect(store) as db:
        runs = db.execute("SELECT command, status, summary FROM runs ORDER BY id").fetchall()
    assert [(kind, status) for kind, status, _ in runs] == [("run", "failed"),
                                                          ("collect", "failed")]
    assert "dash.example/progress?key=***" in runs[1][2]  # the error is kept, the key is not
    captured = capfd.readouterr()
    for where in (repr(results), json.dumps([r.to_dict() for r in results]), captured.out,
                  captured.err, store_dump(store)):
        assert leaks(where) == []


PG_URL = os.environ.get("MUXLANG_TEST_POSTGRES",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_store():
    """A store URL on PostgreSQL, in a schema of its own (skipped when no server answers)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    try:
        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {str(error).splitlines()[0]}")
    schema = "t_" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))

    def dump() -> str:
        with engine.connect() as conn:
            tables = conn.execute(sqlalchemy.text(
                "select table_name from information_schema.tables where table_schema = :s"),
                {"s": schema}).scalars().all()
            return "\n".join(str(row) for table in tables for row in conn.execute(
                sqlalchemy.text(f'select t::text from "{schema}"."{table}" t')))

    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}", dump
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_a_reply_echoing_the_key_with_a_nul_never_shows_the_key_on_postgresql(
        server, api_key, write_spec, write_records, tmp_path, capsys, pg_store):
    url, dump = pg_store
    server.answer = lambda model, prompt, seed: f"key {KEY}\x00 then #### 2"
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": 1, "question": "q"}])
    out = tmp_path / "out.jsonl"
    run_cli(spec, "--input", records, "--output", out, "--store", url)
    main(["collect", str(spec), "--dataset", str(records), "--store", url, "--no-progress"])
    err = capsys.readouterr().err
    for where in (out.read_text(), err, dump()):
        assert KEY not in where and leaks(where, KEY) == []
