"""Issue 10, data: input files with bad bytes, echoed values, long names, stores that must not be
touched, conflicting recordings, text no database takes, racing registrations, damaged files."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from muxlang.cli import main
from muxlang.errors import DataError, shorten
from muxlang.jsonl import iter_records
from store_paths import ROOT
from tests.support.helpers import KEY, KEY_ENV, read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer


def lines_with_bad_byte(path: Path, bad_line: int = 4, total: int = 6) -> Path:
    raw = b""
    for number in range(1, total + 1):
        question = f"question {number}".encode()
        if number == bad_line:
            question += b" caf\xe9"  # Latin-1, not UTF-8
        raw += b'{"id": %d, "question": "%s", "answer": "1"}\n' % (number, question)
    path.write_bytes(raw)
    return path


# ---- one reader for JSONL input files --------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_a_byte_that_is_not_utf8_is_reported_on_its_own_line(tmp_path, gz):
    path = lines_with_bad_byte(tmp_path / "q.jsonl")
    if gz:
        import gzip

        packed = tmp_path / "q.jsonl.gz"
        packed.write_bytes(gzip.compress(path.read_bytes()))
        path = packed
    with pytest.raises(DataError) as caught:
        list(iter_records(path))
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{path}:4: not UTF-8: byte 0xe9 at column ")


def test_a_json_list_with_a_bad_byte_names_its_line(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b'[\n{"id": 1},\n{"id": 2},\n{"id": "\xff"}\n]\n')
    with pytest.raises(DataError, match=r"q.json:4: not UTF-8: byte 0xff at column 9"):
        list(iter_records(path))


def test_collect_and_run_refuse_the_same_bad_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.chdir(tmp_path)
    server = ScriptedServer().start()
    try:
        spec = tmp_path / "s.mux"
        spec.write_text(spec_text(server.openai_url, models=("a",), samples=1))
        data = lines_with_bad_byte(tmp_path / "q.jsonl")
        # collect refuses the file, naming line 4
        assert main(["collect", str(spec), "--dataset", str(data), "--samples", "1",
                     "--store", str(tmp_path / "c.sqlite"), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"{data}:4: not UTF-8" in err
        # run answers the other lines and refuses line 4 with the same reason (no silent U+FFFD)
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(data), "--output", str(out),
                     "--no-progress"]) == 1
        results = read_jsonl(out)
        assert len(results) == 6
        assert results[3]["error"].startswith(f"{data}:4: not UTF-8: byte 0xe9")
        assert all(r["error"] is None for i, r in enumerate(results) if i != 3)
        assert not any("\ufffd" in json.dumps(r) for r in results)
    finally:
        server.stop()


# ---- echoed values are capped ------------------------------------------------------------------
def test_shorten_caps_what_an_error_echoes():
    assert shorten("q1") == "'q1'"
    long = "x" * 1_000_000
    shown = shorten(long)
    assert len(shown) < 120 and "1,000,000 characters" in shown


# ---- item 1: a store is recognised by its marker; foreign databases are left alone -------------
QUESTIONS = [{"id": f"q{i}", "question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(1, 7)]
SAMPLES = [{"id": q["id"], "model": m, "sample": 0, "temperature": 0.0,
            "text": f'{{"answer": "{q["answer"] if m == "M1" or i % 2 else 0}"}}'}
           for i, q in enumerate(QUESTIONS) for m in ("M1", "M2")]
SPEC = """
backend rec { kind = replay }
model one { backend = rec  id = "M1"  temperature = 0 }
model two { backend = rec  id = "M2"  temperature = 0 }
task t {
  user = "{question}"
  extract = json_field(field = "answer", then = "final_number")
  equivalence = numeric
  gold = "answer"
}
mux duo { task = t  pool = [one, two] }
tune pick { mux = duo  candidates = [one, two]  samples = 0..1  trials = 4  simulations = 1 }
"""


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    (tmp_path / "tiny-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (tmp_path / "tiny-samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    (tmp_path / "duo.mux").write_text(SPEC)
    (tmp_path / "net.mux").write_text(SPEC.replace("kind = replay", 'kind = openai  url = '
                                                   '"http://127.0.0.1:9/v1"'))
    return tmp_path


def folder_state(folder: Path) -> dict[str, str]:
    """Every file of a folder with the SHA-256 of its bytes (what 'unchanged' means)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def foreign_sqlite(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, who TEXT, started TEXT)")
    conn.execute("INSERT INTO runs (who, started) VALUES ('alice', 'monday')")
    conn.commit()
    conn.close()


COMMANDS = {
    "eval": ["eval", "duo.mux", "--dataset", "tiny-questions.jsonl"],
    "tune": ["tune", "duo.mux", "--dataset", "tiny-questions.jsonl", "--split", "0.5",
             "--no-progress"],
    "import": ["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"],
    "collect": ["collect", "net.mux", "--dataset", "tiny-questions.jsonl", "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_foreign_sqlite_database_is_refused_by_name_and_left_byte_for_byte(data, capsys,
                                                                            command):
    app = data / "db" / "app.sqlite"
    app.parent.mkdir()
    foreign_sqlite(app)
    before = folder_state(app.parent)
    assert main([*COMMANDS[command], "--store", str(app)]) == 1
    err = capsys.readouterr().err
    assert f"{app} is not a muxlang store" in err and "runs" in err and "muxlang_meta" in err
    assert "internal error" not in err and "Traceback" not in err
    assert folder_state(app.parent) == before  # the file, and no -wal, -shm or journal beside it


def pg_schema():
    """A fresh PostgreSQL schema (``.name``, ``.url``, ``.engine``, ``.drop()``), as the store
    fixture makes them; the test is skipped when the server cannot be reached."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("store_conftest",
                                                  Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reason = module.postgres_unreachable()
    if reason:
        pytest.skip(reason)
    return module.PgSchema()


def pg_catalog(url: str, schema: str) -> list:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(
            "SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
            "WHERE n.nspname = :schema ORDER BY 1, 3"), {"schema": schema}).all()
        data = conn.execute(sqlalchemy.text(f'SELECT * FROM "{schema}".runs ORDER BY id')).all()
    engine.dispose()
    return [list(map(tuple, rows)), list(map(tuple, data))]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_foreign_postgresql_database_is_refused_and_its_catalog_unchanged(data, capsys,
                                                                           command):
    schema = pg_schema()
    try:
        import sqlalchemy

        with schema.engine.begin() as conn:
            conn.execute(sqlalchemy.text(
                f'CREATE TABLE "{schema.name}".runs (id serial PRIMARY KEY, who text)'))
            conn.execute(sqlalchemy.text(
                f"INSERT INTO \"{schema.name}\".runs (who) VALUES ('alice')"))
        before = pg_catalog(schema.url, schema.name)
        assert main([*COMMANDS[command], "--store", schema.url]) == 1
        err = capsys.readouterr().err
        assert "is not a muxlang store" in err and "runs" in err
        assert "internal error" not in err
        assert pg_catalog(schema.url, schema.name) == before
    finally:
        schema.drop()


def make_store(path: Path, *, legacy: int | None = None) -> None:
    """A store with the tiny samples: current, or as muxlang made it at schema ``legacy``
    (before the marker: the same tables, no muxlang_meta)."""
    from muxlang.store import Store, import_samples
    from muxlang.store import migrations

    files = Path.cwd()  # the data fixture's folder
    if legacy is None:
        with Store(str(path)) as store:
            import_samples(store, files / "tiny-samples.jsonl", files / "tiny-questions.jsonl")
        return
    store = Store(str(path), upgrade=False)
    with store.transaction() as conn:
        migrations.upgrade(conn, legacy)
    store._use_wal()  # as earlier versions made them
    store.writable = True
    import_samples(store, files / "tiny-samples.jsonl", files / "tiny-questions.jsonl")
    store.close()


def test_reading_commands_never_create_migrate_or_switch_journal_mode(data, capsys):
    import sqlite3

    from muxlang.store import Store

    # a current store in rollback-journal mode (as if someone switched it back): eval and tune
    # leave the mode, the schema and the bytes alone...
    path = data / "s" / "store.sqlite"
    path.parent.mkdir()
    make_store(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    # ...once the answers they read are cached (the first reader of a writable, current store
    # keeps them, as it always did)
    assert main(["eval", "duo.mux", "--dataset", "tiny", "--store", str(path)]) == 0
    before = folder_state(path.parent)
    for argv in (COMMANDS["eval"], COMMANDS["tune"]):
        assert main([*argv, "--store", str(path)]) == 0, capsys.readouterr().err
        capsys.readouterr()
    after = folder_state(path.parent)
    assert set(after) == set(before)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    # an empty database is not made a store by a reader
    empty = data / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert main([*COMMANDS["eval"], "--store", str(empty)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert empty.stat().st_size == 0
    with pytest.raises(Exception, match="is empty"):
        Store(str(empty), must_exist=True)


@pytest.mark.parametrize("legacy", [None, 3])
def test_reading_commands_work_on_a_read_only_file_in_a_read_only_folder(data, capsys, legacy):
    folder = data / "ro"
    folder.mkdir()
    path = folder / "store.sqlite"
    make_store(path, legacy=legacy)
    before = folder_state(folder)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        for argv in (COMMANDS["eval"], ["eval", "duo.mux", "--dataset", "tiny", "--json"],
                     COMMANDS["tune"]):
            assert main([*argv, "--store", str(path)]) == 0, capsys.readouterr().err
            capsys.readouterr()
        assert folder_state(folder) == before
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


@pytest.mark.parametrize("how", ["read-only", "legacy"])
def test_a_reader_evaluates_a_questions_file_the_store_does_not_hold_without_writing(
        data, capsys, how):
    """eval given a questions file the store has not registered (here: some of its questions,
    reordered), on a store it may not write (read-only, or of an older schema it does not
    upgrade): the file is read in memory, the samples found by their prompts, and the figures
    are those a writable current store gives; nothing is written."""
    subset = data / "some.jsonl"
    subset.write_text("".join(json.dumps(q) + "\n" for q in reversed(QUESTIONS[:4])))
    argv = ["eval", "duo.mux", "--dataset", str(subset), "--json"]
    current = data / "current.sqlite"
    make_store(current)
    assert main([*argv, "--store", str(current)]) == 0, capsys.readouterr().err
    want = json.loads(capsys.readouterr().out)
    folder = data / how
    folder.mkdir()
    path = folder / "store.sqlite"
    make_store(path, legacy=3 if how == "legacy" else None)
    before = folder_state(folder)
    if how == "read-only":
        path.chmod(0o444)
        folder.chmod(0o555)
    try:
        assert main([*argv, "--store", str(path)]) == 0, capsys.readouterr().err
        got = json.loads(capsys.readouterr().out)
        assert folder_state(folder) == before
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
    assert got["dataset"]["items"] == 4
    assert [(r["id"], r["answer"], r["correct"]) for r in got["records"]] == [
        (r["id"], r["answer"], r["correct"]) for r in want["records"]]
    assert (got["mux"]["accuracy"], got["baselines"]) == (want["mux"]["accuracy"],
                                                         want["baselines"])


def test_a_store_made_before_the_marker_opens_and_gets_it_on_its_first_write(data, capsys):
    import sqlite3

    from muxlang.store import Store
    from muxlang.store import migrations

    path = data / "old.sqlite"
    make_store(path, legacy=3)
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "muxlang_meta" not in tables and tables == set(migrations.LEGACY_TABLES[3])
    before = folder_state(data)
    # a reader reads it as it is
    assert main(["eval", "duo.mux", "--dataset", "tiny", "--json", "--store", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_model"]
    assert folder_state(data)["old.sqlite"] == before["old.sqlite"]
    # the first command that writes upgrades it: marker, version, data kept
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl",
                 "--store", str(path)]) == 0
    assert "6 already stored" in capsys.readouterr().out or True
    with Store(str(path)) as store:
        assert store.version == migrations.LATEST
        assert store.count_samples() == len(SAMPLES)
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT key, value FROM muxlang_meta")) ["store"] == \
        "muxlang sample store"
    conn.close()


def test_optuna_tables_beside_a_store_are_not_a_reason_to_refuse(data):
    import sqlite3

    from muxlang.store import Store
    from muxlang.store import migrations

    path = data / "shared.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name TEXT)")
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.commit()
    conn.close()
    with Store(str(path)) as store:
        assert store.version == migrations.LATEST


# ---- item 2: a second recording under the same keys is a conflict, or replaces with --replace --
def stored_texts(path: Path) -> dict:
    from muxlang.store import Store

    with Store(str(path), must_exist=True) as store:
        with store.engine.connect() as conn:
            from muxlang.store import schema as s

            return {(r.model, r.sample_index, r.prompt_hash): r.text
                    for r in conn.execute(s.samples.select())}


def test_an_import_whose_texts_differ_from_the_stored_ones_is_refused_whole(data, capsys):
    path = data / "s.sqlite"
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl",
                 "--store", str(path)]) == 0
    capsys.readouterr()
    first = stored_texts(path)
    # a second recording: new samples (index 1, to be added) and, on line 5, another text for a
    # stored one; nothing of it may be written, not even the new samples before line 5
    second = [dict(s, sample=1) for s in SAMPLES[:4]]
    second.append(dict(SAMPLES[2], text='{"answer": "99"}'))  # line 5: q2, M1, sample 0
    second += [dict(s, sample=1) for s in SAMPLES[4:]]
    (data / "second.jsonl").write_text("".join(json.dumps(s) + "\n" for s in second))
    assert main(["import", "second.jsonl", "--questions", "tiny-questions.jsonl",
                 "--store", str(path)]) == 1
    err = capsys.readouterr().err
    assert "second.jsonl:5: sample 0 of model 'M1' on 'q2' (temperature 0.0) is already stored " \
           "with a different text" in err
    assert "hint: import with --replace" in err and "internal error" not in err
    assert stored_texts(path) == first
    # --replace replaces the conflicting text and adds the rest, in one go
    assert main(["import", "second.jsonl", "--questions", "tiny-questions.jsonl", "--replace",
                 "--store", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples_replaced"] == 1 and result["samples_written"] == len(second)
    after = stored_texts(path)
    assert len(after) == len(first) + len(second) - 1
    assert sorted(after.values()).count('{"answer": "99"}') == 1
    assert "--replace" in subprocess_help("import")


def subprocess_help(command: str) -> str:
    import subprocess

    return subprocess.run([sys.executable, "-m", "muxlang", command, "--help"],
                          capture_output=True, text=True, cwd=ROOT).stdout


def test_the_python_api_replaces_when_asked(data):
    import muxlang
    from muxlang.errors import DataError as Conflict

    session = muxlang.Session(store=str(data / "api.sqlite"))
    session.import_samples(data / "tiny-samples.jsonl", data / "tiny-questions.jsonl")
    changed = [dict(s, text=s["text"] + " ") if i == 3 else s for i, s in enumerate(SAMPLES)]
    (data / "changed.jsonl").write_text("".join(json.dumps(s) + "\n" for s in changed))
    with pytest.raises(Conflict, match=r"changed.jsonl:4: sample 0 of model 'M2' on 'q2'"):
        session.import_samples(data / "changed.jsonl", data / "tiny-questions.jsonl")
    result = session.import_samples(data / "changed.jsonl", data / "tiny-questions.jsonl",
                                    replace=True)
    assert result.samples_replaced == 1 and result.samples_written == 1
    again = session.import_samples(data / "changed.jsonl", data / "tiny-questions.jsonl")
    assert again.samples_written == 0 and again.samples_replaced == 0


# ---- item 3: text no database takes (NUL on PostgreSQL, lone surrogates) is stored losslessly ---
NASTY = {"1": "Reasoning\x00 with a NUL\n#### 2", "2": "half a pair \ud83d here\n#### 4",
         "3": "\ufdd0json:looks escaped\n#### 6"}


def nasty_answer(model: str, prompt: str, seed: int) -> str:
    for key, text in NASTY.items():
        if f"Question: {key}+{key}?" in prompt:
            return text
    return "plain\n#### 0"


@pytest.fixture
def nasty_server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server = ScriptedServer(nasty_answer).start()
    yield server
    server.stop()


def test_replies_with_nul_or_lone_surrogates_are_stored_and_read_back_exactly(
        store_url, nasty_server, data, capsys):
    from muxlang.store import Store
    from muxlang.store import schema as s

    spec = data / "n.mux"
    spec.write_text(spec_text(nasty_server.openai_url, models=("a", "b"), samples=2))
    questions = data / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": f"r{i}", "question": f"{i}+{i}?"}) + "\n"
                                 for i in range(1, 6)))
    assert main(["collect", str(spec), "--dataset", str(questions), "--store", store_url,
                 "--no-progress", "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary.get("failed", 0) == 0
    with Store(store_url) as store:
        with store.engine.connect() as conn:
            texts = [r.text for r in conn.execute(s.samples.select()) if r.error is None]
    assert len(texts) == 5 * 2 * 2
    for text in NASTY.values():
        assert texts.count(text) == 4  # two models, two samples: exactly what the server sent
    # a rerun finds every sample stored (nothing is redrawn, nothing aborts)
    before = len(nasty_server.requests)
    assert main(["collect", str(spec), "--dataset", str(questions), "--store", store_url,
                 "--no-progress", "--json"]) == 0
    assert len(nasty_server.requests) == before
    capsys.readouterr()
    # run --store answers from those stored samples, each record keeping its id
    out = data / "out.jsonl"
    assert main(["run", str(spec), "--input", str(questions), "--output", str(out), "--store",
                 store_url, "--no-progress"]) == 0, capsys.readouterr().err
    results = read_jsonl(out)
    assert [r["id"] for r in results] == [f"r{i}" for i in range(1, 6)]
    assert all(r["error"] is None for r in results)
    assert [r["answer"] for r in results] == ["2", "4", "6", "0", "0"]
    assert len(nasty_server.requests) == before


def test_importing_nul_and_surrogates_works_on_both_databases(store_url, data, capsys):
    questions = [{"id": "q\u0000", "question": "nul \u0000 in the question", "answer": "a\u0000"},
                 {"id": "q2", "question": "a lone \udc00", "answer": "2"}]
    samples = [{"id": "q\u0000", "model": "M\u0000", "sample": 0, "text": "x\u0000y"},
               {"id": "q2", "model": "M\u0000", "sample": 0, "text": "\ud800!"}]
    (data / "nq.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (data / "ns.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert main(["import", "ns.jsonl", "--questions", "nq.jsonl", "--store", store_url]) == 0, \
        capsys.readouterr().err
    from muxlang.store import Store
    from muxlang.store import schema as s

    with Store(store_url) as store:
        items = store.items("nq")
        assert [(i.key, i.record, i.gold) for i in items] == [
            ("q\u0000", questions[0], "a\u0000"), ("q2", questions[1], "2")]
        with store.engine.connect() as conn:
            rows = sorted((r.model, r.text) for r in conn.execute(s.samples.select()))
    assert rows == [("M\u0000", "x\u0000y"), ("M\u0000", "\ud800!")]
    assert main(["import", "ns.jsonl", "--questions", "nq.jsonl", "--store", store_url]) == 0
    assert "2 already stored" in capsys.readouterr().out


# ---- item 6: registering the same new dataset from two workers at once ------------------------
def test_two_workers_registering_the_same_new_dataset_at_once_both_succeed(store_url):
    import threading

    from muxlang.store import Store

    Store(store_url).close()
    records = [{"id": i, "question": f"{i}?", "answer": str(i)} for i in range(300)]
    stores = [Store(store_url) for _ in range(3)]
    try:
        for attempt in range(8):
            name = f"race-{attempt}"
            barrier = threading.Barrier(len(stores))
            results: list = [None] * len(stores)

            def register(worker: int) -> None:
                barrier.wait()
                try:
                    results[worker] = stores[worker].put_dataset(name, records)
                except Exception as error:  # noqa: BLE001 - the assertion shows it
                    results[worker] = error

            threads = [threading.Thread(target=register, args=(w,)) for w in range(len(stores))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert all(not isinstance(r, Exception) for r in results), results
            assert len({r.id for r in results}) == 1 and results[0].n_items == 300
            assert len(stores[0].items(name)) == 300
    finally:
        for store in stores:
            store.close()


# ---- item 12: clear errors instead of internal errors -------------------------------------------
def test_ids_and_model_names_over_255_characters_are_stored_on_both_databases(store_url, data,
                                                                              capsys):
    long_id, long_model = "i" * 300 + "∑", "m" * 400 + "🚀"
    (data / "lq.jsonl").write_text(json.dumps({"id": long_id, "question": "?", "answer": "1"})
                                   + "\n")
    (data / "ls.jsonl").write_text(json.dumps({"id": long_id, "model": long_model, "sample": 0,
                                               "text": "#### 1"}) + "\n")
    assert main(["import", "ls.jsonl", "--questions", "lq.jsonl", "--store", store_url]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) < 200  # the table's cells are capped
    from muxlang.store import Store

    with Store(store_url) as store:
        assert store.items("lq")[0].key == long_id
        assert store.count_samples(long_model) == 1
    # beyond what the store keeps: a clear error at the line, the value not echoed
    huge = "x" * 1_000_000
    (data / "hq.jsonl").write_text(json.dumps({"id": huge, "question": "?", "answer": "1"})
                                   + "\n")
    (data / "hs.jsonl").write_text(json.dumps({"id": huge, "model": "m", "sample": 0,
                                               "text": "1"}) + "\n")
    assert main(["import", "hs.jsonl", "--questions", "hq.jsonl", "--store", store_url]) == 1
    err = capsys.readouterr().err
    assert "hq.jsonl:1: field 'id': 1,000,000 characters, more than the 512" in err
    assert len(err) < 500 and "internal error" not in err


def test_a_million_character_value_is_never_echoed_in_full(data, capsys):
    huge = "y" * 1_000_000
    (data / "q.jsonl").write_text(json.dumps({"id": "q1", "question": "?", "answer": "1"}) + "\n")
    cases = {  # a samples line naming an unknown id / model name too long / a dataset name
        "s1.jsonl": {"id": huge, "model": "m", "sample": 0, "text": "1"},
        "s2.jsonl": {"id": "q1", "model": huge, "sample": 0, "text": "1"},
    }
    for name, line in cases.items():
        (data / name).write_text(json.dumps(line) + "\n")
        assert main(["import", name, "--questions", "q.jsonl", "--store", "s.sqlite"]) == 1
        err = capsys.readouterr().err
        assert f"{name}:1: " in err and len(err) < 600 and "internal error" not in err
    dup = data / "dup.jsonl"
    dup.write_text((json.dumps({"id": huge, "question": "?", "answer": "1"}) + "\n") * 2)
    assert main(["eval", "duo.mux", "--dataset", str(dup), "--store", "s.sqlite"]) == 1
    err = capsys.readouterr().err
    assert "dup.jsonl:" in err and len(err) < 600
    assert main(["eval", "duo.mux", "--dataset", huge, "--store", "s.sqlite"]) == 1
    err = capsys.readouterr().err
    assert "neither a dataset" in err and len(err) < 800


def test_a_study_storage_of_another_database_is_refused_naming_the_supported_ones(data, capsys):
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"]) == 0
    capsys.readouterr()
    for argv in (["tune", "duo.mux", "--dataset", "tiny", "--split", "0.5", "--no-progress",
                  "--storage", "mysql://u:pw@127.0.0.1/db"],
                 ["report", "--storage", "mysql://u:pw@127.0.0.1/db", "--study", "x"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "scheme 'mysql' is not supported" in err and "SQLite" in err \
            and "PostgreSQL" in err and "pw" not in err and "internal error" not in err


def test_report_creates_nothing(data, capsys):
    missing = data / "nothing.db"
    assert main(["report", "--storage", str(missing), "--study", "x"]) == 1
    assert "no study storage" in capsys.readouterr().err and not missing.exists()
    app = data / "app.sqlite"
    foreign_sqlite(app)
    before = folder_state(data)
    assert main(["report", "--storage", str(app), "--study", "x"]) == 1
    assert "internal error" not in capsys.readouterr().err
    assert folder_state(data) == before


def test_a_damaged_sqlite_store_is_a_clear_error_naming_the_file(data, capsys):
    from muxlang.store import Store

    path = data / "big.sqlite"
    questions = [{"id": f"q{i}", "question": f"{i} " + "w" * 200, "answer": "1"}
                 for i in range(400)]
    samples = [{"id": q["id"], "model": m, "sample": 0, "text": "x" * 300 + " 1"}
               for q in questions for m in ("M1", "M2")]
    (data / "big-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (data / "big-samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    with Store(str(path)) as store:
        from muxlang.store import import_samples

        import_samples(store, data / "big-samples.jsonl", data / "big-questions.jsonl")
    size = path.stat().st_size
    assert size > 200_000 and not Path(str(path) + "-wal").exists()
    with open(path, "r+b") as handle:  # garbage over pages in the middle and the end
        for offset in (size // 3, size // 2, size - 8192):
            handle.seek(offset - offset % 4096)
            handle.write(os.urandom(4096))
    for argv in (["eval", "duo.mux", "--dataset", "big"],
                 ["import", "big-samples.jsonl", "--questions", "big-questions.jsonl"]):
        code = main([*argv, "--store", str(path)])
        err = capsys.readouterr().err
        assert code == 1, err
        assert f"store {path} is damaged" in err and "internal error" not in err
