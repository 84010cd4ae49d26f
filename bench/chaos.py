"""Chaos bench: hostile servers and files against the real `muxlang` CLI (issue 10).

Every case runs `python -m muxlang ...` as a subprocess (a fresh SQLite store in a temp directory,
or a fresh PostgreSQL schema when PostgreSQL answers) and is judged from the outside only:

- records lost: good records (samples of well-behaved items, the user's own rows of a foreign
  database, a recording silently dropped by an import) that should be stored or answered, and
  are not, after the command ends;
- secrets leaked: every stdout, stderr, output file and store (the SQLite file with its WAL, or
  every table of the PostgreSQL schema as text) is searched for the API key; each place it is
  found counts one;
- internal errors: outputs that say "internal error" or show a "Traceback";
- the case's own expectation (bounded memory and time, a refusal by name, a file left byte for
  byte unchanged, the right line number, ...): a case that misses it is listed in `failed`.

Hostile servers (one aiohttp process, `--serve`; the model id picks the behaviour, and only the
question marked #hostile gets the hostile reply, so the other items measure what is lost): a gzip
bomb (1 MiB -> 1 GiB), an endless stream, a 50 MB reply, a NUL byte and a lone surrogate in the
text, a reply and an error echoing the API key (also past a 400-character cut, and with a NUL),
connection resets and malformed bodies; a scripted server killed in the middle of a `run`.
Hostile files: a foreign SQLite database (and a foreign PostgreSQL schema) given as --store, a
conflicting re-import, a non-UTF-8 byte on line 4, a 1M-character id. Then the requests per
stored sample of 1, 2 and 3 concurrent collectors (bench/collect_workers.py) on SQLite and
PostgreSQL, and two workers registering one new dataset on PostgreSQL at once.

Cases are never weakened to pass: the JSON says what fails today.

    .venv/bin/python bench/chaos.py [--questions 100] [--quick]

The last line printed is one JSON object: cases, records_lost, secrets_leaked, internal_errors,
requests_per_stored_sample, failed (case: reason), and per-case details.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import collect_workers as cw  # noqa: E402

KEY = "sk-chaos-" + "7Qx9Lm2Vb8Rt4Zp6" * 2  # the API key every hostile backend is given
WINDOWS = {KEY[i:i + 8] for i in range(9, len(KEY) - 7)}  # any 8 characters of its secret part


def leaked(text: str) -> bool:
    """Whether ``text`` shows the key or a piece of it (a prefix left by a cut counts)."""
    return any(window in text for window in WINDOWS)
ITEMS = 10
HOSTILE = 3  # the item whose prompt says #hostile
SAMPLES = 2
TIMEOUT = 120  # seconds a command may take before the case counts as hanging
MUX_ROOT = [ROOT]  # the checkout whose muxlang the cases run (--muxlang)


# ------------------------------------------------------------------------------------------------
# the hostile server
def serve() -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        mode = body.get("model", "ok")
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        n = int(body.get("n") or 1)
        hostile = "#hostile" in prompt or mode in ("echo400", "echo500")

        def reply(texts: list[str]) -> web.Response:
            return web.json_response({
                "id": "x", "object": "chat.completion", "model": mode,
                "choices": [{"index": i, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": t}}
                            for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5}})

        if not hostile or mode == "ok":
            return reply(["Fine. #### 42"] * n)
        if mode == "bomb":  # 1 MiB of gzip that inflates to 1 GiB
            return web.Response(body=BOMB, headers={"Content-Encoding": "gzip",
                                                    "Content-Type": "application/json"})
        if mode == "endless":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"choices": [{"message": {"content": "')
            chunk = b"a" * 65536
            try:
                while True:
                    await response.write(chunk)
            except (ConnectionError, asyncio.CancelledError):
                return response
        if mode == "big":
            return reply(["#### 1 " + "x" * (50 * 1024 * 1024)] * n)
        if mode == "nul":
            return reply(["before\x00after #### 7"] * n)
        if mode == "surrogate":
            text = json.dumps({"choices": [{"index": i, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "lone \\ud800 surrogate #### 7"}}
                for i in range(n)]}).replace("\\\\ud800", "\\ud800")
            return web.Response(text=text, content_type="application/json")
        if mode == "echo":
            return reply([f"Your key is {key}. #### 5"] * n)
        if mode == "echo_nul":
            return reply([f"key {key}\x00 #### 5"] * n)
        if mode in ("echo400", "echo500"):
            # the key at a different place in each reply (300..419 characters in for a 400,
            # 60..179 for a 500): whatever the length a message is cut to, some cut crosses it
            COUNTER[0] += 1
            if mode == "echo400":
                pad = 300 + (COUNTER[0] * 7) % 120
                return web.json_response({"error": {"message": "y" * pad + key}}, status=400)
            pad = 60 + (COUNTER[0] * 7) % 120
            return web.Response(status=500, text="z" * pad + key + " rejected")
        if mode == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        if mode == "malformed":
            return web.Response(status=200, text='{"choices": [{"mess',
                                content_type="application/json")
        return reply(["#### 0"] * n)

    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing, built a MiB at a time
    parts = [squeeze.compress(b"{")]
    blank = b" " * (1024 * 1024)
    for _ in range(1024):
        parts.append(squeeze.compress(blank))
    parts.append(squeeze.compress(b"}") + squeeze.flush())
    BOMB = b"".join(parts)

    COUNTER = [0]

    async def main() -> None:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"URL http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_hostile() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("URL "):
        proc.kill()
        raise SystemExit(f"hostile server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


# ------------------------------------------------------------------------------------------------
# running the CLI
class Result:
    def __init__(self, code: int | None, out: str, err: str, seconds: float, rss_mb: float,
                 timed_out: bool):
        self.code, self.out, self.err = code, out, err
        self.seconds, self.rss_mb, self.timed_out = seconds, rss_mb, timed_out


def mux(args: list[str], cwd: Path, timeout: float = TIMEOUT,
        env: dict | None = None) -> Result:
    """`python -m muxlang ARGS`, with its peak RSS (wait4) and a hard timeout."""
    environment = {**os.environ, "PYTHONPATH": str(MUX_ROOT[0]), "CHAOS_KEY": KEY, **(env or {})}
    out_path, err_path = cwd / f".out-{uuid.uuid4().hex[:6]}", cwd / f".err-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "muxlang", *args], cwd=str(cwd),
                                stdout=out, stderr=err, env=environment)
        timed_out = False
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - began
    text_out = out_path.read_bytes().decode("utf-8", "replace")
    text_err = err_path.read_bytes().decode("utf-8", "replace")
    out_path.unlink()
    err_path.unlink()
    return Result(None if timed_out else proc.returncode, text_out, text_err, seconds,
                  usage.ru_maxrss / 1024, timed_out)


class Tally:
    """What the cases found."""

    def __init__(self) -> None:
        self.cases: list[dict] = []
        self.lost = 0
        self.leaks = 0
        self.internal = 0

    def case(self, name: str, *, results: list[Result] = (), lost: int = 0,
             leaks: int = 0, problems: list[str] = (), **details) -> None:
        internal = sum(1 for r in results
                       if "internal error" in (r.out + r.err).lower()
                       or "Traceback" in r.out + r.err)
        problems = list(problems)
        for r in results:
            if r.timed_out:
                problems.append(f"still running after {TIMEOUT} s")
            leaks += leaked(r.out) + leaked(r.err)
        if internal:
            problems.append("internal error / Traceback: " + next(
                _last_line(r.err) for r in results
                if "internal error" in (r.out + r.err).lower() or "Traceback" in r.out + r.err))
        if lost:
            problems.append(f"{lost} records lost")
        if leaks:
            problems.append(f"key leaked in {leaks} place(s)")
        self.lost += lost
        self.leaks += leaks
        self.internal += internal
        entry = {"case": name, "ok": not problems, "problems": problems,
                 "seconds": round(max((r.seconds for r in results), default=0.0), 2),
                 "max_rss_mb": round(max((r.rss_mb for r in results), default=0.0), 1),
                 **details}
        self.cases.append(entry)
        mark = "ok  " if not problems else "FAIL"
        print(f"{mark} {name}" + (f": {'; '.join(problems)}" if problems else ""),
              file=sys.stderr, flush=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]


# ------------------------------------------------------------------------------------------------
# stores
def sqlite_store(work: Path, name: str) -> str:
    return str(work / f"{name}-{uuid.uuid4().hex[:6]}.sqlite")


def store_text(store: str) -> str:
    """Everything a store holds, as text: the SQLite file and its WAL, or every PostgreSQL table."""
    if "postgresql" in store:
        import sqlalchemy

        schema = store.rsplit("search_path%3D", 1)[1]
        engine = sqlalchemy.create_engine(store)
        parts = []
        with engine.connect() as conn:
            tables = [r[0] for r in conn.execute(sqlalchemy.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema})]
            for table in tables:
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    parts.append(repr(tuple(row)))
        engine.dispose()
        return "\n".join(parts)
    text = ""
    for suffix in ("", "-wal", "-journal"):
        path = Path(store + suffix)
        if path.exists():
            text += path.read_bytes().decode("latin-1")
    return text


def count_leaks(*texts: str) -> int:
    return sum(leaked(t) for t in texts)


def stored_ok(store: str, model_id: str) -> int:
    query = f"SELECT COUNT(*) FROM samples WHERE error IS NULL AND model = '{model_id}'"
    if "postgresql" in store:
        import sqlalchemy

        engine = sqlalchemy.create_engine(store)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sqlalchemy.text(query)).scalar_one())
        except Exception:  # noqa: BLE001 - no table: nothing stored
            return 0
        finally:
            engine.dispose()
    if not Path(store).exists():
        return 0
    con = sqlite3.connect(store, timeout=30)
    try:
        return int(con.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


class PgSchemas:
    """Fresh PostgreSQL schemas (dropped at the end); None when PostgreSQL does not answer."""

    def __init__(self) -> None:
        self.reason = cw.postgres_reachable()
        self.made: list[str] = []

    def new(self) -> str | None:
        if self.reason:
            return None
        import sqlalchemy

        schema = "chaos_" + uuid.uuid4().hex[:10]
        engine = sqlalchemy.create_engine(cw.PG_URL)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        self.made.append(schema)
        sep = "&" if "?" in cw.PG_URL else "?"
        return f"{cw.PG_URL}{sep}options=-csearch_path%3D{schema}"

    def drop(self) -> None:
        if not self.made:
            return
        import sqlalchemy

        engine = sqlalchemy.create_engine(cw.PG_URL)
        with engine.begin() as conn:
            for schema in self.made:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


# ------------------------------------------------------------------------------------------------
# the cases
def hostile_spec(work: Path, url: str, mode: str, retries: int = 2) -> Path:
    spec = work / f"{mode}.mux"
    spec.write_text(f"""
backend chaos {{
  kind = openai
  url = "{url}/v1"
  api_key = env("CHAOS_KEY")
  concurrency = 4
  timeout = 20s
  retries = {retries}
  retry_time = 30s
}}
model m {{ backend = chaos  id = "{mode}"  temperature = 0.5 }}
task t {{
  user = "Question: {{question}}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}}
mux x {{
  task = t
  pool = [m * {SAMPLES}]
}}
""")
    return spec


def questions_file(work: Path, name: str = "q.jsonl") -> Path:
    path = work / name
    path.write_text("".join(json.dumps({
        "id": f"q{i}", "question": f"What is {i} + 1?" + (" #hostile" if i == HOSTILE else ""),
        "answer": str(i + 1)}) + "\n" for i in range(ITEMS)))
    return path


def server_cases(tally: Tally, work: Path, url: str, pg: PgSchemas) -> None:
    data = questions_file(work)
    good = (ITEMS - 1) * SAMPLES
    modes = ["bomb", "endless", "big", "nul", "surrogate", "echo", "echo_nul", "echo400",
             "echo500", "reset", "malformed"]
    for mode in modes:
        stores = [("sqlite", sqlite_store(work, mode))]
        if mode in ("nul", "surrogate", "echo_nul") and not pg.reason:
            stores.append(("postgresql", pg.new()))
        for database, store in stores:
            spec = hostile_spec(work, url, mode)
            res = mux(["collect", str(spec), "--dataset", str(data), "--store", store,
                       "--no-progress"], work)
            stored = stored_ok(store, mode)
            problems = []
            if mode == "bomb" and res.rss_mb > 512:
                problems.append(f"peak RSS {res.rss_mb:.0f} MB for one gzip bomb")
            if mode == "big" and res.rss_mb > 512:
                problems.append(f"peak RSS {res.rss_mb:.0f} MB for one 50 MB reply")
            texts = store_text(store)
            if mode == "big" and "x" * (10 * 1024 * 1024) in texts:
                problems.append("a 50 MB reply was stored whole (no max_response)")
            if mode == "endless" and res.seconds > 15:  # the spec's timeout is 20 s
                problems.append(f"an endless stream ran {res.seconds:.0f} s (until the timeout)")
            hostile_stored = stored - min(stored, good)
            # echo400 and echo500 answer every item so (each with the key elsewhere in the text)
            expect = 0 if mode in ("echo400", "echo500") else good
            tally.case(f"collect: {mode} reply ({database})", results=[res],
                       lost=max(0, expect - min(stored, expect)),
                       leaks=count_leaks(texts), problems=problems, exit=res.code,
                       stored_good=min(stored, good), hostile_stored=hostile_stored)
        if mode in ("nul", "surrogate", "echo", "echo_nul", "echo400", "echo500", "bomb"):
            # `run --store` on the same server: every record gets its line, with its id
            spec = hostile_spec(work, url, mode)
            store = sqlite_store(work, "run-" + mode)
            output = work / f"out-{mode}.jsonl"
            res = mux(["run", str(spec), "--input", str(data), "--output", str(output),
                       "--store", store], work)
            lines = []
            if output.exists():
                for line in output.read_text(errors="replace").splitlines():
                    try:
                        lines.append(json.loads(line))
                    except ValueError:
                        pass
            ids = {str(line.get("id")) for line in lines}
            lost = sum(1 for i in range(ITEMS) if f"q{i}" not in ids)  # a line each, error or not
            out_text = output.read_bytes().decode("latin-1") if output.exists() else ""
            tally.case(f"run --store: {mode} reply", results=[res], lost=lost,
                       leaks=count_leaks(out_text, store_text(store)), exit=res.code)


def dying_server_case(tally: Tally, work: Path) -> None:
    """A server that answers, then dies mid-run (README retry settings): bounded, not for ever."""
    proc, url = cw.start_server(0.05, 64)
    spec = work / "dying.mux"
    spec.write_text(f"""
backend local {{
  kind = openai
  url = "{url}/v1"
  concurrency = 32
  timeout = 10s
  retries = 4
  retry_time = 3m
}}
model a {{ backend = local  id = "a"  temperature = 0.5 }}
model b {{ backend = local  id = "b"  temperature = 0.5 }}
task t {{
  user = "Question: {{question}}"
  extract = final_number
}}
mux x {{
  task = t
  pool = [a * 3, b * 3]
}}
""")
    data = work / "dying.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"{i}?"}) + "\n"
                            for i in range(200)))
    output = work / "dying-out.jsonl"
    environment = {**os.environ, "PYTHONPATH": str(MUX_ROOT[0])}
    began = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "muxlang", "run", str(spec), "--input",
                              str(data), "--output", str(output)], cwd=str(work),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=environment)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if output.exists() and len(output.read_text().splitlines()) >= 20:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    try:
        out, err = child.communicate(timeout=TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        timed_out = True
    res = Result(None if timed_out else child.returncode, out, err, time.monotonic() - began,
                 0.0, timed_out)
    lines = output.read_text().splitlines() if output.exists() else []
    problems = []
    after = time.monotonic() - killed
    if after > 30:
        problems.append(f"{after:.0f} s after the server died (no circuit breaker)")
    tally.case("run: server dies mid-run (200 records, retries 4, retry_time 3m)",
               results=[res], lost=200 - len(lines), problems=problems,
               seconds_after_death=round(after, 1), stderr_lines=len(err.splitlines()))


def foreign_store_cases(tally: Tally, work: Path, url: str, pg: PgSchemas) -> None:
    """A user's own database as --store: refused by name, left byte for byte unchanged."""
    data = questions_file(work, "fq.jsonl")
    samples = work / "fs.jsonl"
    samples.write_text("".join(json.dumps({"id": f"q{i}", "model": "rec", "sample": 0,
                                           "temperature": 0.0, "text": f"#### {i + 1}"}) + "\n"
                               for i in range(ITEMS)))
    spec = work / "replay.mux"
    spec.write_text("""
backend recorded { kind = replay }
model rec { backend = recorded  id = "rec" }
task t {
  user = "Question: {question}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}
mux x {
  task = t
  pool = [rec]
}
""")
    commands = {
        "eval": ["eval", str(spec), "--dataset", str(data)],
        "import": ["import", str(samples), "--questions", str(data)],
        "collect": ["collect", str(hostile_spec(work, url, "ok")), "--dataset", str(data),
                    "--no-progress"],
    }
    for name, args in commands.items():
        app = work / f"app-{name}.sqlite"
        con = sqlite3.connect(app)
        con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, customer TEXT)")
        con.executemany("INSERT INTO runs (customer) VALUES (?)", [(f"c{i}",) for i in range(5)])
        con.commit()
        con.close()
        before = hashlib.sha256(app.read_bytes()).hexdigest()
        res = mux([*args, "--store", str(app)], work)
        after = hashlib.sha256(app.read_bytes()).hexdigest()
        problems = []
        if before != after or any(Path(f"{app}{s}").exists() for s in ("-wal", "-shm")):
            problems.append("the foreign database was changed")
        if res.code == 0:
            problems.append("not refused")
        con = sqlite3.connect(app)
        try:
            kept = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        except sqlite3.Error:
            kept = 0
        con.close()
        tally.case(f"foreign SQLite database as --store: {name}", results=[res],
                   lost=5 - min(kept, 5), problems=problems, exit=res.code)
    url = pg.new()
    if url is None:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE runs (id SERIAL PRIMARY KEY, customer TEXT)"))
        conn.execute(sqlalchemy.text("INSERT INTO runs (customer) VALUES ('a'), ('b'), ('c')"))

    def shape() -> tuple:
        with engine.connect() as conn:
            tables = sorted(r[0] for r in conn.execute(sqlalchemy.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()")))
            columns = sorted(r[0] for r in conn.execute(sqlalchemy.text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs' "
                "AND table_schema = current_schema()")))
            rows = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM runs")).scalar_one()
        return tables, columns, rows

    for name in ("eval", "import", "collect"):
        before = shape()
        res = mux([*commands[name], "--store", url], work)
        after = shape()
        problems = []
        if before != after:
            problems.append(f"the foreign schema was changed: {before[:2]} -> {after[:2]}")
        if res.code == 0:
            problems.append("not refused")
        tally.case(f"foreign PostgreSQL schema as --store: {name}", results=[res],
                   lost=max(0, 3 - after[2]), problems=problems, exit=res.code)
    engine.dispose()


def import_cases(tally: Tally, work: Path) -> None:
    """A second recording of the same samples with other texts: refused by line, nothing written."""
    data = questions_file(work, "iq.jsonl")
    first, second = work / "rec1.jsonl", work / "rec2.jsonl"
    for path, tag in ((first, "first"), (second, "second")):
        path.write_text("".join(json.dumps({"id": f"q{i}", "model": "rec", "sample": 0,
                                            "temperature": 0.0,
                                            "text": f"{tag} recording #### {i}"}) + "\n"
                                for i in range(ITEMS)))
    store = sqlite_store(work, "import")
    one = mux(["import", str(first), "--questions", str(data), "--store", store], work)
    two = mux(["import", str(second), "--questions", str(data), "--store", store], work)
    con = sqlite3.connect(store)
    texts = [t for (t,) in con.execute("SELECT text FROM samples")]
    con.close()
    problems = []
    lost = 0
    if two.code == 0:
        problems.append("the conflicting import was accepted: " + _last_line(two.err))
        lost = sum("first" in t for t in texts)  # the second recording silently dropped
    elif not re.search(r"rec2\.jsonl:\d+", two.err):
        problems.append("the conflict does not name a line of rec2.jsonl: "
                        + _last_line(two.err))
    if any("second" in t for t in texts):
        problems.append("a refused import wrote samples")
    tally.case("conflicting re-import", results=[one, two], lost=lost, problems=problems,
               exit=two.code)


def bad_file_cases(tally: Tally, work: Path, url: str, pg: PgSchemas) -> None:
    """A non-UTF-8 byte on line 4; a 1M-character id."""
    bad = work / "bad.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": f"{i}?", "answer": str(i)}).encode()
             for i in range(6)]
    lines[3] = b'{"id": "q3", "question": "caf\xe9?", "answer": "3"}'
    bad.write_bytes(b"\n".join(lines) + b"\n")
    spec = hostile_spec(work, url, "ok")
    for command in ("collect", "run"):
        args = (["collect", str(spec), "--dataset", str(bad), "--no-progress", "--store",
                 sqlite_store(work, "bad")] if command == "collect" else
                ["run", str(spec), "--input", str(bad), "--output", str(work / "bad-out.jsonl")])
        res = mux(args, work)
        problems = []
        text = res.out + res.err
        if ":4" not in text and "line 4" not in text:
            problems.append("line 4 not named: " + _last_line(res.err))
        if res.code == 0 and command == "collect":
            problems.append("accepted")
        tally.case(f"non-UTF-8 byte on line 4: {command}", results=[res], problems=problems,
                   exit=res.code)

    huge = work / "huge.jsonl"
    huge.write_text(json.dumps({"id": "i" * 1_000_000, "question": "1?", "answer": "1"}) + "\n"
                    + json.dumps({"id": "small", "question": "2?", "answer": "2"}) + "\n")
    stores = [("sqlite", sqlite_store(work, "huge"))]
    if not pg.reason:
        stores.append(("postgresql", pg.new()))
    for database, store in stores:
        res = mux(["collect", str(spec), "--dataset", str(huge), "--no-progress", "--store",
                   store], work)
        problems = []
        if len(res.out) + len(res.err) > 100_000:
            problems.append(f"{len(res.out) + len(res.err):,} characters printed (values not "
                            "capped)")
        stored = stored_ok(store, "ok")
        # refusing the file by line and field is fine; saying "done" without its samples is not
        tally.case(f"1M-character id: collect ({database})", results=[res],
                   lost=max(0, 2 * SAMPLES - stored) if res.code == 0 else 0,
                   problems=problems, exit=res.code, printed=len(res.out) + len(res.err),
                   said=_last_line(res.err)[:200])
    res = mux(["run", str(spec), "--input", str(huge), "--output", str(work / "huge-out.jsonl")],
              work)
    problems = []
    if len(res.err) > 100_000:
        problems.append(f"{len(res.err):,} characters on stderr (values not capped)")
    out_lines = (work / "huge-out.jsonl").read_text().splitlines() \
        if (work / "huge-out.jsonl").exists() else []
    tally.case("1M-character id: run", results=[res],
               lost=2 - len(out_lines) if res.code == 0 else 0, problems=problems,
               exit=res.code, said=_last_line(res.err)[:200])


def concurrent_registration_case(tally: Tally, work: Path, pg: PgSchemas) -> None:
    """Two collectors registering the same new dataset at once on PostgreSQL (issue 10 item 6)."""
    if pg.reason:
        return
    server, url = cw.start_server(0.01, 64)
    try:
        (work / "reg").mkdir()
        spec, data = cw.write_workload(work / "reg", url, 20, 16)
        fails = 0
        results = []
        for _ in range(3):
            store = pg.new()
            cmd = cw.collect_cmd(spec, data, store)
            procs = [cw.launch(cmd, work, MUX_ROOT[0]) for _ in range(2)]
            for proc in procs:
                out, err = proc.communicate(timeout=TIMEOUT)
                results.append(Result(proc.returncode, out, err, 0.0, 0.0, False))
                fails += proc.returncode != 0
        problems = [f"{fails} of 6 workers failed: " + next(
            (_last_line(r.err) for r in results if r.code), "")] if fails else []
        tally.case("two collectors register one new dataset at once (PostgreSQL)",
                   results=results, problems=problems)
    finally:
        server.terminate()
        server.wait(10)


def worker_cases(tally: Tally, work: Path, questions: int) -> dict:
    """Requests per stored sample with 1, 2 and 3 concurrent collectors (and a kill -9)."""
    server, url = cw.start_server(0.02, 64)
    ratios: dict = {}
    try:
        sub = work / "workers"
        sub.mkdir()
        spec, data = cw.write_workload(sub, url, questions, 32)
        wanted = questions * len(cw.MODELS) * cw.SAMPLES
        databases = ["sqlite"] + ([] if cw.postgres_reachable() else ["postgresql"])
        for database in databases:
            ratios[database] = {}
            for n in (1, 2, 3):
                run = cw.run_workers(database, n, url=url, workdir=sub, spec=spec, data=data,
                                     wanted=wanted, root=MUX_ROOT[0],
                                     cold=MUX_ROOT[0] != ROOT)
                ratios[database][str(n)] = run["requests_per_stored_sample"]
                problems = list(run["worker_errors"])
                if not run["rows_ok"]:
                    problems.append(run["problem"])
                if run["requests_per_stored_sample"] > cw.TARGET:
                    problems.append(f"{run['requests_per_stored_sample']} requests per sample")
                tally.case(f"{n} concurrent collector(s) ({database})",
                           lost=max(0, wanted - run["stored"]), problems=problems,
                           requests=run["requests"], stored=run["stored"])
            run = cw.run_workers(database, 2, url=url, workdir=sub, spec=spec, data=data,
                                 wanted=wanted, kill_at=1 / 3, root=MUX_ROOT[0],
                                 cold=MUX_ROOT[0] != ROOT)
            problems = list(run["worker_errors"])
            if not run["rows_ok"]:
                problems.append(run["problem"])
            tally.case(f"kill -9 of one of 2 collectors ({database})",
                       lost=max(0, wanted - run["stored"]), problems=problems,
                       requests=run["requests"], stored=run["stored"],
                       extra_requests=run["extra_requests"])
            ratios[database]["2_with_kill"] = run["requests_per_stored_sample"]
    finally:
        server.terminate()
        server.wait(10)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--questions", type=int, default=100,
                        help="questions of the concurrent-collector runs (x 3 models x 3)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the concurrent collectors")
    parser.add_argument("--only", action="append", metavar="GROUP",
                        help="run only these groups of cases (servers, dying, foreign, import, "
                             "files, registration, workers); repeatable")
    parser.add_argument("--muxlang", metavar="CHECKOUT", type=Path,
                        help="run the cases against the muxlang of another checkout (e.g. an "
                             "older commit: git archive COMMIT | tar -x -C DIR)")
    args = parser.parse_args()
    if args.muxlang:
        MUX_ROOT[0] = args.muxlang.resolve()
    if args.serve:
        serve()
        return 0
    tally = Tally()
    pg = PgSchemas()
    if pg.reason:
        print(f"PostgreSQL cases skipped: {pg.reason}", file=sys.stderr)
    ratios: dict = {}
    began = time.monotonic()
    server, url = start_hostile()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            steps = {
                "servers": lambda: server_cases(tally, work, url, pg),
                "dying": lambda: dying_server_case(tally, work),
                "foreign": lambda: foreign_store_cases(tally, work, url, pg),
                "import": lambda: import_cases(tally, work),
                "files": lambda: bad_file_cases(tally, work, url, pg),
                "registration": lambda: concurrent_registration_case(tally, work, pg),
            }
            for name, step in steps.items():
                if args.only and name not in args.only:
                    continue
                try:
                    step()
                except Exception as error:  # noqa: BLE001 - the bench goes on, and says so
                    tally.case(f"harness error in {name}", problems=[
                        f"{type(error).__name__}: {str(error)[:300]}"])
            if not args.quick and (not args.only or "workers" in args.only):
                ratios = worker_cases(tally, work, args.questions)
    finally:
        server.kill()
        server.wait()
        pg.drop()
    failed = [{"case": c["case"], "problems": c["problems"]} for c in tally.cases if not c["ok"]]
    print(json.dumps({
        "cases": len(tally.cases), "cases_failed": len(failed), "records_lost": tally.lost,
        "secrets_leaked": tally.leaks, "internal_errors": tally.internal,
        "requests_per_stored_sample": ratios, "postgresql": pg.reason or "yes",
        "muxlang": str(MUX_ROOT[0]),
        "seconds": round(time.monotonic() - began, 1), "failed": failed,
        "details": tally.cases}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
