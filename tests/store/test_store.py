"""Store round trips, the sample cache key, idempotency, migrations, URLs — on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from sqlalchemy import inspect, select, text

from muxlang.errors import MuxError
from muxlang.samples import SampleKey, canonical_json, prompt_hash
from muxlang.store import NewSample, Store, load_dataset_file, redact_url, resolve_url
from muxlang.store import migrations
from muxlang.store import schema as s

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
PARAMS = {"temperature": 0.3, "top_p": None, "max_tokens": 256, "seed": 1}


def key(**changes) -> SampleKey:
    params = {**PARAMS, **changes.pop("params", {})}
    messages = changes.pop("messages", MESSAGES)
    return SampleKey.make(changes.pop("backend", "local"), changes.pop("model", "m-8b"), params,
                          prompt_hash(messages))


def sample(k: SampleKey, index: int, text_: str = "#### 2", **kw) -> NewSample:
    return NewSample(k, index, text_, tokens_in=kw.pop("tokens_in", 10),
                     tokens_out=kw.pop("tokens_out", 5), latency=0.25, finish_reason="stop", **kw)


def test_round_trip(store):
    k = key()
    assert store.get_samples(k) == []
    assert store.missing_indices(k, 3) == [0, 1, 2]
    written = store.put_samples([sample(k, 0, "a"), sample(k, 2, "c", tokens_in=None)])
    assert written == 2
    got = store.get_samples(k)
    assert [(g.index, g.text) for g in got] == [(0, "a"), (2, "c")]
    assert got[0].tokens_in == 10 and got[0].tokens_out == 5 and got[0].latency == 0.25
    assert got[0].finish_reason == "stop" and got[0].error is None
    assert got[1].tokens_in is None
    assert store.missing_indices(k, 3) == [1]
    assert store.missing_indices(k, 2) == [1]
    assert [g.index for g in store.get_samples(k, 1)] == [0]
    # unicode and long text survive
    long_text = "∑ émoji 🚀 " * 5000
    store.put_samples([sample(k, 1, long_text)])
    assert store.get_samples(k)[1].text == long_text


def test_same_request_is_never_stored_twice(store):
    k = key()
    assert store.put_samples([sample(k, 0, "first")]) == 1
    assert store.put_samples([sample(k, 0, "second")]) == 0  # ON CONFLICT DO NOTHING
    assert store.put_samples([sample(k, 0, "x"), sample(k, 0, "y"), sample(k, 1, "z")]) == 1
    assert [(g.index, g.text) for g in store.get_samples(k)] == [(0, "first"), (1, "z")]
    assert store.count_samples() == 2


@pytest.mark.parametrize("change", [
    {"params": {"temperature": 0.7}}, {"params": {"top_p": 0.9}}, {"params": {"max_tokens": 512}},
    {"params": {"seed": 2}}, {"params": {"seed": None}}, {"model": "m-9b"}, {"backend": "other"},
    {"messages": [{"role": "user", "content": "1+1?"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2?"}]},
])
def test_any_change_of_the_request_gives_new_samples(store, change):
    base = key()
    store.put_samples([sample(base, i, f"base {i}") for i in range(3)])
    other = key(**change)
    assert other.hash != base.hash
    assert store.get_samples(other) == []
    assert store.missing_indices(other, 3) == [0, 1, 2]
    store.put_samples([sample(other, 0, "other")])
    assert [g.text for g in store.get_samples(base)] == ["base 0", "base 1", "base 2"]
    assert [g.text for g in store.get_samples(other)] == ["other"]


def test_equivalent_parameter_spellings_share_samples():
    assert key(params={"temperature": 1}).hash == key(params={"temperature": 1.0}).hash
    assert canonical_json({"b": 1.0, "a": [0.5, None, True]}) == '{"a":[0.5,null,true],"b":1}'


def test_failed_request_is_retried_then_replaced(store):
    k = key()
    store.put_samples([NewSample(k, 0, None, error="HTTP 503"), sample(k, 1)])
    assert store.missing_indices(k, 2) == [0]  # an error is not a sample: draw it again
    assert store.get_samples(k)[0].error == "HTTP 503"
    store.put_samples([NewSample(k, 0, None, error="timeout")])  # still failing: kept once
    assert store.count_samples() == 2
    store.put_samples([sample(k, 0, "#### 7")])
    got = store.get_samples(k)
    assert [(g.index, g.text, g.error) for g in got] == [(0, "#### 7", None), (1, "#### 2", None)]
    store.put_samples([NewSample(k, 0, None, error="late failure")])  # never overwrites success
    assert store.get_samples(k)[0].text == "#### 7"


def test_many_keys_batched(store):
    keys = [key(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(1200)]
    store.put_samples([sample(k, j, f"{i}/{j}") for i, k in enumerate(keys) for j in range(2)])
    found = store.get_samples_many(keys, 2)
    assert len(found) == 1200
    assert all([g.text for g in found[k.hash]] == [f"{i}/0", f"{i}/1"] for i, k in enumerate(keys))
    assert store.count_samples() == 2400


def test_put_is_one_transaction(store):
    k = key()
    with pytest.raises(ValueError):
        store.put_samples([sample(k, 0), sample(k, -1)])
    assert store.count_samples() == 0

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction() as conn:
            store.put_samples([sample(k, 0), sample(k, 1)], conn=conn)
            raise Boom
    assert store.count_samples() == 0


def test_datasets_and_runs(store, tmp_path):
    path = tmp_path / "tiny-questions.jsonl"
    records = [{"id": "a", "question": "1+1?", "answer": "2"},
               {"id": "b", "question": "2+2?", "answer": 4}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    info = load_dataset_file(store, path)
    assert info.name == "tiny" and info.n_items == 2
    again = load_dataset_file(store, path)  # by content hash: the same dataset
    assert again == info
    items = store.items("tiny")
    assert [(i.key, i.gold, i.record["question"]) for i in items] == [("a", "2", "1+1?"),
                                                                     ("b", "4", "2+2?")]
    # same name, other content: refused, nothing changed
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "a", "question": "3+3?", "answer": "6"}) + "\n")
    with pytest.raises(MuxError, match="already in the store with different content"):
        load_dataset_file(store, other, name="tiny")
    assert store.get_dataset("tiny").n_items == 2
    with pytest.raises(MuxError, match="no dataset 'tiy'.*did you mean 'tiny'"):
        store.require_dataset("tiy")

    run_id = store.start_run("collect", {"k": 3}, spec_path="x.mux", spec_text="mux x {}")
    store.finish_run(run_id, "ok", {"samples": 6})
    run = store.runs()[0]
    assert run["status"] == "ok" and run["spec_text"] == "mux x {}" and run["ended_at"] >= run["started_at"]
    assert json.loads(run["summary"]) == {"samples": 6} and len(run["spec_hash"]) == 64


def test_duplicate_ids_in_a_dataset_file(store, tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": 1, "question": "a"}\n{"id": 2, "question": "b"}\n{"id": 1, "question": "c"}\n')
    with pytest.raises(MuxError, match=r"dup.jsonl:3: field 'id': duplicate id '1' \(first on line 1\)"):
        load_dataset_file(store, path)
    assert store.list_datasets() == []


def test_schema_version_and_upgrade_from_v1(store_url):
    # build a v1 store by hand, with data in it
    first = Store(store_url, upgrade=False)
    assert first.upgrade(target=1) == (0, 1)
    with first.transaction() as conn:
        tables = set(inspect(conn).get_table_names())
        assert {"datasets", "items", "samples", "runs", "schema_version"} <= tables
        assert "answers" not in tables
        assert "summary" not in {c["name"] for c in inspect(conn).get_columns("runs")}
        assert "cost" not in {c["name"] for c in inspect(conn).get_columns("samples")}
    k = key()
    first.put_samples([sample(k, 0, "kept across the upgrade")])
    with first.transaction() as conn:
        conn.execute(text("INSERT INTO runs (command, parameters, started_at, status) "
                          "VALUES ('collect', '{}', 1.0, 'ok')"))
    first.close()
    # opening it upgrades to the latest version, keeping the data
    second = Store(store_url)
    assert second.version == migrations.LATEST == 6
    assert second.get_samples(k)[0].text == "kept across the upgrade"
    assert second.get_samples(k)[0].cost is None  # samples.cost (v6): none reported
    old_run = second.runs()[0]
    assert old_run["summary"] is None and old_run["host"] is None and old_run["pid"] is None
    with second.transaction() as conn:
        assert "answers" in set(inspect(conn).get_table_names())
    assert second.upgrade() == (6, 6)  # idempotent
    second.close()


def test_runs_of_dead_processes_are_marked_killed(store):
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True)
    dead_pid = int(child.stdout)
    first = store.start_run("collect", {})
    with store.transaction() as conn:
        conn.execute(s.runs.update().where(s.runs.c.id == first).values(pid=dead_pid))
    mine = store.start_run("collect", {})  # reaps the dead one, not itself
    statuses = {r["id"]: r["status"] for r in store.runs()}
    assert statuses == {first: "killed", mine: "running"}
    assert store.runs()[0]["pid"] == os.getpid()


def test_newer_schema_is_refused(store_url):
    with Store(store_url) as st:
        with st.transaction() as conn:
            conn.execute(s.meta.update().where(s.meta.c.key == "schema_version")
                         .values(value="99"))
    with pytest.raises(MuxError, match="schema version 99, newer than"):
        Store(store_url)


def test_urls_hide_credentials(monkeypatch, tmp_path):
    assert redact_url("postgresql+psycopg://bob:s3cret@db.example:5432/mux") == \
        "postgresql+psycopg://bob:***@db.example:5432/mux"
    assert "hunter2" not in redact_url("postgresql://u@h/db?password=hunter2&sslmode=require")
    assert resolve_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'muxlang.sqlite'}"
    monkeypatch.setenv("MUXLANG_STORE", str(tmp_path / "env.sqlite"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.sqlite'}"
    assert resolve_url("given.sqlite") == f"sqlite:///{tmp_path / 'given.sqlite'}"


def test_unreachable_postgres_is_a_plain_error():
    with pytest.raises(MuxError) as info:
        Store("postgresql://alice:topsecret@127.0.0.1:1/nothing?connect_timeout=2")
    message = str(info.value)
    assert "topsecret" not in message and "alice:***@127.0.0.1:1" in message


def test_sqlite_uses_wal(tmp_path):
    with Store(str(tmp_path / "w.sqlite")) as st:
        with st.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def _writer(url: str, worker: int, n: int) -> None:
    st = Store(url)
    keys = [key(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(n)]
    for i, k in enumerate(keys):  # every worker writes the same samples, one transaction each
        st.put_samples([sample(k, j, f"{i}/{j}") for j in range(2)])
    st.close()


def test_concurrent_writers_store_each_sample_once(store_url):
    Store(store_url).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, w, 60)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(store_url) as st:
        assert st.count_samples() == 120
