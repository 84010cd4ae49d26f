"""``muxlang collect``: kill -9 at any moment, run again: exactly the samples of a clean run.

A real subprocess against the scripted OpenAI-compatible server (tests/support/scripted_server.py).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 40
MODELS = ("a", "b", "c")
K = 3


def spec_text(url: str, n: str = "auto") -> str:
    models = "".join(f"""
model {m} {{
  backend = local
  id = "id-{m}"
  seed = 100
  temperature = 0.7
  input_price = 0.5
  output_price = 1.5
}}
""" for m in MODELS)
    return f"""
backend local {{
  kind = openai
  url = "{url}/v1"
  concurrency = 8
  timeout = 10s
  retries = 2
  n = {n}
}}
{models}
task t {{
  user = "Question: {{question}}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}}
mux pool {{
  task = t
  pool = [{", ".join(f"{m} * {K}" for m in MODELS)}]
}}
"""


@pytest.fixture
def server():
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.scripted_server", "--port", "0",
                             "--latency", "0.03", "--slots", "64"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("URL "), proc.stderr.read()
    yield line.split()[1]
    proc.kill()
    proc.wait()


def collect(tmp_path: Path, store: Path, spec: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "muxlang", "collect", str(spec), "--dataset",
           str(tmp_path / "q.jsonl"), "--store", str(store), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rows(store) -> list[tuple]:
    query = "SELECT key_hash, sample_index, model, prompt_hash, text, error FROM samples"
    if isinstance(store, str):  # a PostgreSQL URL
        import sqlalchemy

        engine = sqlalchemy.create_engine(store)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sqlalchemy.text(query))]
        except sqlalchemy.exc.ProgrammingError:  # tables not created yet
            return []
        finally:
            engine.dispose()
    if not store.exists():
        return []
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute(query).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def run_statuses(store) -> list[str]:
    query = "SELECT status FROM runs ORDER BY id"
    if isinstance(store, str):
        import sqlalchemy

        engine = sqlalchemy.create_engine(store)
        with engine.connect() as conn:
            out = [r[0] for r in conn.execute(sqlalchemy.text(query))]
        engine.dispose()
        return out
    con = sqlite3.connect(store)
    out = [s for (s,) in con.execute(query)]
    con.close()
    return out


PG_URL = os.environ.get("MUXLANG_TEST_POSTGRES",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_store():
    """A PostgreSQL URL on a fresh schema (skipped only when the server cannot be reached)."""
    import uuid

    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            schema = "c_" + uuid.uuid4().hex[:12]
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001
        reason = f"PostgreSQL not reachable at {PG_URL}: {str(error).splitlines()[0]}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def server_log(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/log", timeout=10) as response:
        return json.loads(response.read())


def requested_samples(entries: list[dict]) -> list[tuple[str, str, int]]:
    """(model, prompt hash, sample index) of every sample the server was asked for."""
    from muxlang.samples import prompt_hash

    out = []
    for entry in entries:
        body = entry["body"]
        if not isinstance(body, dict) or entry["status"] != 200:
            continue
        digest = prompt_hash(body["messages"])
        for j in range(int(body.get("n") or 1)):
            out.append((body["model"], digest, int(body["seed"]) - 100 + j))
    return out


@pytest.mark.parametrize("n,database", [("auto", "sqlite"), ("false", "sqlite"),
                                        ("auto", "postgresql")])
def test_kill_9_then_rerun_gives_exactly_a_clean_run(tmp_path, server, n, database, request):
    questions = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}
                 for i in range(ITEMS)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    spec = tmp_path / "c.mux"
    spec.write_text(spec_text(server, n))
    total = ITEMS * len(MODELS) * K

    # the reference: a clean run into its own store
    clean_store = tmp_path / "clean.sqlite"
    done = collect(tmp_path, clean_store, spec)
    assert done.returncode == 0, done.stderr
    clean = {(r[0], r[1], r[4]) for r in rows(clean_store)}
    assert len(clean) == total

    # the same, killed with SIGKILL in the middle
    store = (request.getfixturevalue("pg_store") if database == "postgresql"
             else tmp_path / "killed.sqlite")
    proc = collect(tmp_path, store, spec, wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(rows(store)) < total // 4:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = rows(store)
    assert total // 4 <= len(at_kill) < total, "kill -9 did not land mid-run"
    first_log = server_log(server)

    # run the same command again: it continues
    again = collect(tmp_path, store, spec)
    assert again.returncode == 0, again.stderr
    assert f"{len(at_kill)} already stored" in again.stderr
    final = rows(store)
    assert len(final) == total  # none lost, none duplicated
    assert {(r[0], r[1], r[4]) for r in final} == clean  # exactly the clean run's samples
    per_key: dict[str, list[int]] = {}
    for r in final:
        per_key.setdefault(r[0], []).append(r[1])
    assert sorted(map(sorted, per_key.values())) == [[0, 1, 2]] * (ITEMS * len(MODELS))

    # the second run asked the server only for what was not stored at the kill
    stored_at_kill = {(r[2], r[3], r[1]) for r in at_kill}
    second = requested_samples(server_log(server)[len(first_log):])
    assert not stored_at_kill & set(second)
    assert len(second) == len(set(second)) == total - len(at_kill)

    # a third run draws nothing
    third = collect(tmp_path, store, spec, "--json")
    summary = json.loads(third.stdout)
    assert summary["drawn"] == 0 and summary["stored_before"] == total
    # the killed run never finished; the next run found its process gone and marked it killed
    assert run_statuses(store) == ["killed", "ok", "ok"]


def numbered_questions(tmp_path: Path, server: str, count: int) -> tuple[Path, Path]:
    """q.jsonl with ``count`` questions, and a spec for ``server``: (spec, store path)."""
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": f"{i}?", "answer": str(i)}) + "\n"
                for i in range(count)))
    spec = tmp_path / "c.mux"
    spec.write_text(spec_text(server))
    return spec, tmp_path / "s.sqlite"


def test_more_samples_later_extends_without_redrawing(tmp_path, server):
    spec, store = numbered_questions(tmp_path, server, 5)
    assert collect(tmp_path, store, spec, "--samples", "2").returncode == 0
    before = {(r[0], r[1]): r[4] for r in rows(store)}
    assert len(before) == 5 * 3 * 2
    start = len(server_log(server))
    done = collect(tmp_path, store, spec, "--samples", "5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["drawn"] == 5 * 3 * 3
    after = {(r[0], r[1]): r[4] for r in rows(store)}
    assert len(after) == 5 * 3 * 5 and all(after[key] == text for key, text in before.items())
    asked = requested_samples(server_log(server)[start:])
    assert sorted({index for _, _, index in asked}) == [2, 3, 4]


def test_collect_errors_are_plain(tmp_path):
    spec = tmp_path / "r.mux"
    spec.write_text('backend rec {\n  kind = replay\n}\nmodel a {\n  backend = rec\n  id = "x"\n}\n'
                    'task t {\n  user = "{question}"\n}\nmux m {\n  task = t\n  pool = [a]\n}\n')
    (tmp_path / "q.jsonl").write_text('{"id": 1, "question": "?"}\n')
    done = collect(tmp_path, tmp_path / "s.sqlite", spec)
    assert done.returncode == 1 and "replay backend: nothing to collect" in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_stops_cleanly_and_keeps_what_arrived(tmp_path, server):
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": f"{i} + 1?", "answer": str(i + 1)}) + "\n"
                for i in range(ITEMS)))
    spec = tmp_path / "c.mux"
    spec.write_text(spec_text(server, "false"))
    store = tmp_path / "s.sqlite"
    proc = collect(tmp_path, store, spec, wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(rows(store)) < 30:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    kept = len(rows(store))
    assert 30 <= kept < ITEMS * len(MODELS) * K
    con = sqlite3.connect(store)
    assert [s for (s,) in con.execute("SELECT status FROM runs")] == ["interrupted"]
    con.close()
    again = collect(tmp_path, store, spec, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["stored_before"] == kept
    assert len(rows(store)) == ITEMS * len(MODELS) * K


def asked_per_model(entries: list[dict]) -> dict[str, int]:
    """Samples the server was asked for (choices of successful requests), per model id."""
    out: dict[str, int] = {}
    for entry in entries:
        body = entry["body"]
        if isinstance(body, dict) and entry["status"] == 200:
            out[body["model"]] = out.get(body["model"], 0) + int(body.get("n") or 1)
    return out


@pytest.mark.parametrize("change,models", [
    (("  temperature = 0.7\n", "  temperature = 0.9\n"), ["id-a"]),
    (("  seed = 100\n", "  seed = 101\n"), ["id-a"]),
    (("  temperature = 0.7\n", "  temperature = 0.7\n  top_p = 0.9\n"), ["id-a"]),
    (("  temperature = 0.7\n", "  temperature = 0.7\n  max_tokens = 64\n"), ["id-a"]),
    (('user = "Question: {question}"', 'user = "Q: {question}"'), ["id-a", "id-b", "id-c"]),
])
def test_cache_key_end_to_end_through_the_server(tmp_path, server, change, models):
    """The same request never reaches the server twice; changing a sampling parameter of one
    model (or the prompt of all) draws new samples for exactly those, k distinct indices each,
    and leaves the old ones stored."""
    items = 4
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": f"{i} * 3?", "answer": str(3 * i)}) + "\n"
                for i in range(items)))
    spec = tmp_path / "c.mux"
    text = spec_text(server)
    spec.write_text(text)
    store = tmp_path / "s.sqlite"
    assert collect(tmp_path, store, spec).returncode == 0
    start = len(server_log(server))
    assert collect(tmp_path, store, spec).returncode == 0
    assert asked_per_model(server_log(server)[start:]) == {}  # the same requests: none sent

    old, new = change
    if old.startswith("  "):  # a parameter of model a only: its block is the first model block
        head, sep, rest = text.partition("model a {")
        block, close, tail = rest.partition("}")
        assert old in block
        changed = head + sep + block.replace(old, new) + close + tail
    else:
        assert old in text
        changed = text.replace(old, new)
    spec.write_text(changed)
    before = len(rows(store))
    start = len(server_log(server))
    done = collect(tmp_path, store, spec, "--json")
    assert done.returncode == 0, done.stderr
    assert asked_per_model(server_log(server)[start:]) == {m: items * K for m in models}
    after = rows(store)
    assert len(after) == before + items * K * len(models)  # the old samples are kept
    per_key: dict[str, list[int]] = {}
    for r in after:
        per_key.setdefault(r[0], []).append(r[1])
    assert all(sorted(indices) == list(range(K)) for indices in per_key.values())
    start = len(server_log(server))
    assert collect(tmp_path, store, spec).returncode == 0
    assert asked_per_model(server_log(server)[start:]) == {}


def test_repeated_kill_9_at_many_moments_still_gives_a_clean_run(tmp_path, server):
    """kill -9 at several moments of the same collect (before the store exists, early, middle,
    late), each time rerunning the command: every intermediate store is a subset of the clean
    run's samples, and the last run completes it exactly."""
    questions = [{"id": f"q{i}", "question": f"What is {i} - 1?", "answer": str(i - 1)}
                 for i in range(ITEMS)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    spec = tmp_path / "c.mux"
    spec.write_text(spec_text(server, "false"))  # one request per sample: the most commits
    total = ITEMS * len(MODELS) * K
    clean_store = tmp_path / "clean.sqlite"
    assert collect(tmp_path, clean_store, spec).returncode == 0
    clean = {(r[0], r[1], r[4]) for r in rows(clean_store)}
    assert len(clean) == total

    store = tmp_path / "killed.sqlite"
    kills = 0
    for target in (0, total // 10, total // 2, 9 * total // 10):
        proc = collect(tmp_path, store, spec, wait=False)
        deadline = time.monotonic() + 60
        while (proc.poll() is None and time.monotonic() < deadline
               and len(rows(store)) < target):
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        now = rows(store)
        assert {(r[0], r[1], r[4]) for r in now} <= clean  # nothing foreign, nothing conflated
        assert len(now) == len({(r[0], r[1]) for r in now})  # no (key, index) twice
    assert kills >= 1
    done = collect(tmp_path, store, spec, "--json")
    assert done.returncode == 0, done.stderr
    final = rows(store)
    assert len(final) == total and {(r[0], r[1], r[4]) for r in final} == clean
    statuses = run_statuses(store)
    assert statuses[-1] == "ok" and "running" not in statuses


def test_the_dataset_may_be_named_by_its_store_name(tmp_path, server):
    spec, store = numbered_questions(tmp_path, server, 3)
    assert collect(tmp_path, store, spec, "--samples", "1").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "muxlang", "collect", str(spec), "--store", str(store),
            "--no-progress", "--samples", "2", "--json", "--dataset"]
    done = subprocess.run([*base, "q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["drawn"] == 3 * 3  # one more sample per model and item
    typo = subprocess.run([*base, "qq"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert typo.returncode == 1 and "'qq' is neither a dataset in store" in typo.stderr
    assert "did you mean 'q'" in typo.stderr and "Traceback" not in typo.stderr


# ------------------------------------------------------------------------------------------------
# concurrent collectors: leases in the store (muxlang/store/leases.py); more workers, larger runs
# and PostgreSQL kills: bench/collect_workers.py and bench/chaos.py
WORKER_ITEMS = 24
@pytest.fixture
def slow_server():
    """The scripted server at 100 ms a request: a run of a few seconds, long enough to kill."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.scripted_server", "--port", "0",
                             "--latency", "0.1", "--slots", "64"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("URL "), proc.stderr.read()
    yield line.split()[1]
    proc.kill()
    proc.wait()


def expected_texts(spec: Path, questions: list[dict]) -> dict[tuple[str, str, int], str]:
    """(model id, prompt hash, index) -> the text the scripted server answers for that sample."""
    import muxlang
    from muxlang.prompts import render
    from muxlang.samples import prompt_hash
    from tests.support.scripted_server import default_answer

    loaded = muxlang.load(spec)
    task = loaded.tasks["t"]
    out = {}
    for record in questions:
        messages = render(task, record)
        prompt = "\n".join(m["content"] for m in messages)
        for name in MODELS:
            for index in range(K):
                out[(f"id-{name}", prompt_hash(messages), index)] = default_answer(
                    f"id-{name}", prompt, 100 + index)
    return out


def lease_owners(store) -> list[str]:
    query = "SELECT DISTINCT owner FROM collect_leases"
    if isinstance(store, str):
        import sqlalchemy

        engine = sqlalchemy.create_engine(store)
        try:
            with engine.connect() as conn:
                return [r[0] for r in conn.execute(sqlalchemy.text(query))]
        except sqlalchemy.exc.ProgrammingError:
            return []
        finally:
            engine.dispose()
    con = sqlite3.connect(store, timeout=30)
    try:
        return [r[0] for r in con.execute(query)]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def two_workers(tmp_path: Path, server: str, store, *extra: str):
    """Two `muxlang collect` processes on one spec, dataset and store (the second starts once the
    first has registered the dataset); returns (spec, questions, [proc, proc], log start)."""
    questions = [{"id": f"q{i}", "question": f"What is {i} * 5?", "answer": str(5 * i)}
                 for i in range(WORKER_ITEMS)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    spec = tmp_path / "c.mux"
    spec.write_text(spec_text(server, "false"))  # one request per sample
    start = len(server_log(server))
    first = collect(tmp_path, store, spec, *extra, wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None and not lease_owners(store):
        time.sleep(0.02)
    second = collect(tmp_path, store, spec, *extra, wait=False)
    return spec, questions, [first, second], start


def victim_of(store, procs) -> subprocess.Popen:
    """A worker holding leases now (its owner id names its pid)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = {int(owner.split(":")[1]) for owner in lease_owners(store)}
        for proc in procs:
            if proc.pid in pids and proc.poll() is None:
                return proc
        time.sleep(0.01)
    raise AssertionError("no worker holds leases")


def check_store(store, spec: Path, questions: list[dict]) -> None:
    """Exactly the clean run's samples: each model, item and index once, the server's text."""
    expected = expected_texts(spec, questions)
    final = rows(store)
    assert sorted((r[2], r[3], r[1]) for r in final) == sorted(expected)
    assert all(r[4] == expected[(r[2], r[3], r[1])] and r[5] is None for r in final)
    assert lease_owners(store) == []  # every lease released or taken over and released


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_collectors_share_the_work_and_one_survives_kill_9(tmp_path, slow_server, database,
                                                               request):
    """Two real collect processes on one store: each sample is requested once (the store holds
    each worker's claims); kill -9 of the one holding claims mid-run: the other draws what it
    held and finishes. Requests per stored sample: 1 plus what was in flight at the kill."""
    store = (request.getfixturevalue("pg_store") if database == "postgresql"
             else tmp_path / "s.sqlite")
    total = WORKER_ITEMS * len(MODELS) * K
    spec, questions, procs, start = two_workers(tmp_path, slow_server, store)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(rows(store)) < total // 3:
        time.sleep(0.02)
    victim = victim_of(store, procs)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    survivor = next(p for p in procs if p is not victim)
    _, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert len(rows(store)) == total, "the survivor did not finish the work"
    check_store(store, spec, questions)
    requests = server_log(slow_server)[start:]
    # what the victim had asked for and not stored at the kill: at most its jobs in progress
    # (2 x concurrency 8 + 4 jobs of K samples, one request each with n = false)
    in_flight = (2 * 8 + 4) * K
    assert total <= len(requests) <= 1.05 * total + in_flight, len(requests)
    assert len(requested_samples(requests)) == len(requests)  # every request was answered


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def stop_a_lease_holder(store: Path, procs) -> tuple[subprocess.Popen, dict]:
    """SIGSTOP a worker that holds leases on samples not stored yet, at a moment when it is not
    inside a write transaction: the test holds SQLite's write lock meanwhile (a process stopped
    while holding that lock would block every writer, leases or not). Returns the worker and
    its leases as the store holds them once it is stopped, (key hash, index) -> expires_at: it
    renews nothing after that, so these expiries are final."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        con = sqlite3.connect(store, timeout=60, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")  # no worker writes (claims, renews, stores) now
            stored = set(con.execute("SELECT key_hash, sample_index FROM samples"))
            held: dict[int, dict] = {}
            for key_hash, index, owner, expires in con.execute(
                    "SELECT key_hash, sample_index, owner, expires_at FROM collect_leases"):
                if (key_hash, index) not in stored:
                    held.setdefault(int(owner.split(":")[1]), {})[(key_hash, index)] = expires
            victim = next((p for p in procs if held.get(p.pid) and p.poll() is None), None)
            if victim is not None:
                os.kill(victim.pid, signal.SIGSTOP)
                while not stopped(victim.pid):  # the signal is delivered asynchronously
                    assert time.monotonic() < deadline, "the worker did not stop"
                    time.sleep(0.001)
                return victim, held[victim.pid]
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")  # nothing was written: the workers write again
            con.close()
        time.sleep(0.02)
    raise AssertionError("no worker holds leases on samples still to draw")


def test_a_hung_collector_loses_its_claims_when_its_lease_expires(tmp_path, slow_server):
    """A worker that stops (SIGSTOP: a hung or cut-off host, its process still there) renews
    nothing: once its lease time has passed, the other worker takes its claims and finishes.
    Proved on the store's own record, whatever the machine's load: every sample the stopped
    worker held was requested by the survivor only after that sample's lease expired."""
    store = tmp_path / "s.sqlite"
    total = WORKER_ITEMS * len(MODELS) * K
    spec, questions, procs, start = two_workers(tmp_path, slow_server, store, "--lease", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(rows(store)) < total // 3:
        time.sleep(0.02)
    victim, held = stop_a_lease_holder(store, procs)
    try:
        survivor = next(p for p in procs if p is not victim)
        _, err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, err
        assert len(rows(store)) == total
        # the victim never stored these (stopped, then killed): the survivor drew each, and
        # sent its request (created_at - latency: when the request went) after the lease's end
        con = sqlite3.connect(store, timeout=30)
        try:
            drawn = {(h, i): (created, latency) for h, i, created, latency in con.execute(
                "SELECT key_hash, sample_index, created_at, latency FROM samples")}
        finally:
            con.close()
        assert held and set(held) <= set(drawn)
        # (10 ms: the database clock's rounding; the lease is 2 s, the requests take 100 ms)
        early = {pair: (drawn[pair][0] - drawn[pair][1], expires) for pair, expires in held.items()
                 if drawn[pair][0] - drawn[pair][1] < expires - 0.01}
        assert not early, f"taken before the lease expired (request sent, lease end): {early}"
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    check_store(store, spec, questions)
    requests = server_log(slow_server)[start:]
    assert total <= len(requests) <= 1.05 * total + (2 * 8 + 4) * K
