"""Concurrent collectors: requests per stored sample with 1, 2 and 3 `muxlang collect` processes.

N real `muxlang collect` processes (subprocesses, started together) draw the same spec and
dataset into one store (SQLite file, and PostgreSQL when it answers) from one scripted server
(tests/support/scripted_server.py, its own process). Each worker claims what it draws with leases
in the store (muxlang/store/leases.py), so together they should ask the server for about the
samples needed: target requests per stored sample <= 1.05 (no kill here, so nothing was in flight
at a kill). Every run is checked: the store holds exactly the wanted samples (k distinct indices
per model and item) and every worker exits 0.

Default workload: 300 questions x 3 models x 3 samples = 2,700 samples (as in issue 10, where two
collectors sent 4,896 requests for them), n = false (one request per sample, so requests and
samples asked are the same count), server latency 20 ms, 64 slots, concurrency 32 per worker.

Throughput of one collector against the bare baseline of the other bench scripts
(bench/run_throughput.py): the ideal, requests x latency / min(slots, concurrency), and the same
requests drawn by muxlang's runtime alone with no store at all ("bare"). The collector's time is
its own draw time (`seconds` of `collect --json`: from the first claim to the last stored sample),
best of --repeat runs, plus the whole process's wall time (start-up, store, dataset included).

With --kill, one more case: two workers, one killed with SIGKILL once a third of the samples is
stored; the other finishes (a dead process of this host loses its leases at once; a worker of
another host would after --lease seconds). Its extra requests are what was in flight at the kill.

    .venv/bin/python bench/collect_workers.py [--questions 300] [--database sqlite|postgresql|both]
        [--workers 1,2,3] [--kill] [--repeat 3]

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("m1", "m2", "m3")
SAMPLES = 3
PG_URL = os.environ.get("MUXLANG_TEST_POSTGRES",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET = 1.05


# ------------------------------------------------------------------------------------------------
# the server
def start_server(latency: float, slots: int, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted_server", "--port", "0",
         "--latency", str(latency), "--slots", str(slots), *extra],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("URL "):
        proc.kill()
        raise SystemExit(f"scripted server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def server_log(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/log", timeout=60) as response:
        return json.loads(response.read())


def asked(entries: list[dict]) -> tuple[int, int]:
    """(requests, samples asked for: the n of each request) in a slice of the server's log."""
    samples = 0
    for entry in entries:
        body = entry.get("body")
        samples += int(body.get("n") or 1) if isinstance(body, dict) else 1
    return len(entries), samples


# ------------------------------------------------------------------------------------------------
# stores
def postgres_reachable() -> str | None:
    """None when PostgreSQL answers at PG_URL, else why not."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        return None
    except Exception as error:  # noqa: BLE001
        return str(error).splitlines()[0]


class FreshStore:
    """A new, empty store: a SQLite file in ``workdir`` or a PostgreSQL schema (dropped after)."""

    def __init__(self, database: str, workdir: Path):
        self.database = database
        self.schema = None
        if database == "sqlite":
            self.path = workdir / f"store-{uuid.uuid4().hex[:8]}.sqlite"
            self.url = str(self.path)
            return
        import sqlalchemy

        self.schema = "cw_" + uuid.uuid4().hex[:12]
        self.engine = sqlalchemy.create_engine(PG_URL)
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{self.schema}"'))
        sep = "&" if "?" in PG_URL else "?"
        self.url = f"{PG_URL}{sep}options=-csearch_path%3D{self.schema}"

    def query(self, sql: str) -> list[tuple]:
        if self.schema is None:
            if not self.path.exists():
                return []
            con = sqlite3.connect(self.path, timeout=30)
            try:
                return con.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                con.close()
        import sqlalchemy

        try:
            with self.engine.connect() as conn:
                conn.execute(sqlalchemy.text(f'SET search_path TO "{self.schema}"'))
                return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
        except sqlalchemy.exc.ProgrammingError:
            return []

    def samples(self) -> list[tuple]:
        return self.query("SELECT key_hash, sample_index, text FROM samples WHERE error IS NULL")

    def drop(self) -> None:
        if self.schema is None:
            return
        import sqlalchemy

        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.engine.dispose()


# ------------------------------------------------------------------------------------------------
# the workload
def spec_text(url: str, concurrency: int) -> str:
    models = "".join(f"""
model {m} {{
  backend = local
  id = "{m}"
  seed = 1
  temperature = 0.7
}}
""" for m in MODELS)
    return f"""
backend local {{
  kind = openai
  url = "{url}/v1"
  concurrency = {concurrency}
  timeout = 30s
  retries = 2
  n = false
}}
{models}
task t {{
  user = "Solve: {{question}}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}}
mux bench {{
  task = t
  pool = [{", ".join(f"{m} * {SAMPLES}" for m in MODELS)}]
}}
"""


def write_workload(workdir: Path, url: str, questions: int, concurrency: int) -> tuple[Path, Path]:
    data = workdir / "questions.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is {i} + {3 * i}?", "answer": str(4 * i)})
        + "\n" for i in range(questions)))
    spec = workdir / "bench.mux"
    spec.write_text(spec_text(url, concurrency))
    return spec, data


def register(store_url: str, data: Path) -> None:
    """Register the dataset before the workers start (as a first `collect` on one host would)."""
    sys.path.insert(0, str(ROOT))
    from muxlang.store import Store, load_dataset_file

    with Store(store_url) as store:
        load_dataset_file(store, data, gold_field="answer")


def collect_cmd(spec: Path, data: Path, store_url: str, *extra: str) -> list[str]:
    """The command line of one worker (``python -m muxlang collect ... --json``)."""
    return [sys.executable, "-m", "muxlang", "collect", str(spec), "--dataset", str(data),
            "--store", store_url, "--no-progress", "--json", *extra]


def launch(cmd: list[str], workdir: Path, root: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=str(workdir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})


def check_rows(rows: list[tuple], wanted: int) -> str | None:
    """None when ``rows`` are exactly ``wanted`` samples, SAMPLES distinct indices per key."""
    per_key: dict[str, list[int]] = {}
    for key_hash, index, _ in rows:
        per_key.setdefault(key_hash, []).append(index)
    if len(rows) != wanted:
        return f"{len(rows)} samples stored, {wanted} wanted"
    bad = [k for k, v in per_key.items() if sorted(v) != list(range(SAMPLES))]
    return f"{len(bad)} keys without indices 0..{SAMPLES - 1}" if bad else None


def run_workers(database: str, workers: int, *, url: str, workdir: Path, spec: Path, data: Path,
                wanted: int, kill_at: float | None = None, lease: float = 30.0,
                cold: bool = False, root: Path = ROOT) -> dict:
    """``workers`` collectors at once into a fresh store; what the server was asked, checked."""
    store = FreshStore(database, workdir)
    try:
        if not cold:
            register(store.url, data)
        start = len(server_log(url))
        began = time.perf_counter()
        cmd = collect_cmd(spec, data, store.url,
                          *(["--lease", str(lease)] if root == ROOT else []))
        procs = [launch(cmd, workdir, root) for _ in range(workers)]
        killed = None
        if kill_at is not None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(store.samples()) < kill_at * wanted:
                if procs[0].poll() is not None:
                    break
                time.sleep(0.02)
            # the victim: a worker holding leases (requests in flight), as its owner id says
            pids = {int(owner.split(":")[1]) for (owner,) in
                    store.query("SELECT DISTINCT owner FROM collect_leases")}
            victim = next((p for p in procs if p.pid in pids and p.poll() is None), procs[0])
            procs.remove(victim)
            procs.insert(0, victim)
            if victim.poll() is None:
                os.kill(victim.pid, signal.SIGKILL)
                killed = len(store.samples())
        outs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            outs.append((proc.returncode, out, err))
        wall = time.perf_counter() - began
        requests, samples_asked = asked(server_log(url)[start:])
        rows = store.samples()
        problem = check_rows(rows, wanted)
        leftover = store.query("SELECT COUNT(*) FROM collect_leases")
        survivors = outs[1:] if killed is not None else outs
        failed = [f"exit {rc}: {(err.strip().splitlines() or [''])[-1][:300]}"
                  for rc, _, err in survivors if rc != 0]
        summaries = []
        for rc, out, _ in outs:
            try:
                summaries.append(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                summaries.append(None)
        result = {
            "database": database, "workers": workers, "wanted": wanted, "stored": len(rows),
            "requests": requests, "samples_asked": samples_asked,
            "requests_per_stored_sample": round(requests / max(len(rows), 1), 4),
            "wall_s": round(wall, 3),
            "draw_s": [s.get("seconds") if s else None for s in summaries],
            "drawn": [s.get("drawn") if s else None for s in summaries],
            "from_cache": [s.get("from_cache") if s else None for s in summaries],
            "leases_left": leftover[0][0] if leftover else None,
            "rows_ok": problem is None, "problem": problem, "worker_errors": failed,
        }
        if killed is not None:
            result["stored_at_kill"] = killed
            result["extra_requests"] = requests - len(rows)
        return result
    finally:
        store.drop()


def bare_runtime(url: str, spec: Path, data: Path) -> tuple[float, int]:
    """The same samples drawn by muxlang's runtime alone: no store, no leases, no process."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from muxlang.lang import load_spec
    from muxlang.prompts import render
    from muxlang.runtime.executor import Runtime, backends_of
    from muxlang.runtime.loop import run

    loaded = load_spec(spec)
    runnable = loaded.runnable("bench")
    task = runnable.task
    records = [json.loads(line) for line in data.read_text().splitlines()]
    jobs = [(m.member, render(task, r)) for r in records for m in runnable.pool]

    async def main() -> float:
        runtime = Runtime(backends_of(runnable))
        queue = list(jobs)

        async def worker() -> None:
            while queue:
                model, messages = queue.pop()
                results = await runtime.sample(model, messages, list(range(SAMPLES)))
                assert all(not hasattr(r, "error") for r in results), results

        async with runtime:
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(2 * runtime.total_concurrency + 4)))
            return time.perf_counter() - began

    elapsed = run(main())
    return elapsed, len(jobs) * SAMPLES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32, help="per worker")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure")
    parser.add_argument("--repeat", type=int, default=3,
                        help="single-collector throughput runs (best is reported)")
    parser.add_argument("--kill", action="store_true",
                        help="also: two workers, one killed with SIGKILL mid-run")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--compare", metavar="CHECKOUT", type=Path,
                        help="also time one collector of another muxlang checkout (e.g. the "
                             "code before leases: git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--cold", action="store_true",
                        help="start the workers on an empty store (they register the dataset "
                             "together) instead of one with the dataset registered")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    skipped = {}
    if "postgresql" in databases:
        reason = postgres_reachable()
        if reason:
            skipped["postgresql"] = reason
            databases.remove("postgresql")
            print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
    wanted = args.questions * len(MODELS) * SAMPLES
    server, url = start_server(args.latency, args.slots)
    results: dict = {"questions": args.questions, "models": len(MODELS), "samples": SAMPLES,
                     "wanted": wanted, "latency_s": args.latency, "slots": args.slots,
                     "concurrency": args.concurrency, "cpus": os.cpu_count(),
                     "load_average": round(os.getloadavg()[0], 2), "skipped": skipped,
                     "requests_per_stored_sample": {}, "runs": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            spec, data = write_workload(workdir, url, args.questions, args.concurrency)
            common = dict(url=url, workdir=workdir, spec=spec, data=data, wanted=wanted,
                          lease=args.lease, cold=args.cold)
            for database in databases:
                ratios = {}
                for n in counts:
                    run = run_workers(database, n, **common)
                    results["runs"].append(run)
                    ratios[str(n)] = run["requests_per_stored_sample"]
                    print(f"{database}: {n} worker(s): {run['requests']} requests for "
                          f"{run['stored']} stored samples = {run['requests_per_stored_sample']}"
                          f" per sample; wall {run['wall_s']} s; rows "
                          f"{'ok' if run['rows_ok'] else run['problem']}"
                          + (f"; errors {run['worker_errors']}" if run["worker_errors"] else ""),
                          file=sys.stderr)
                results["requests_per_stored_sample"][database] = ratios
                if args.kill:
                    run = run_workers(database, 2, kill_at=1 / 3, **common)
                    run["case"] = "kill -9 of one of two workers"
                    results["runs"].append(run)
                    results.setdefault("kill", {})[database] = {
                        k: run[k] for k in ("requests", "stored", "requests_per_stored_sample",
                                            "stored_at_kill", "extra_requests", "rows_ok",
                                            "wall_s")}
                    print(f"{database}: kill -9 of one of 2 workers at {run['stored_at_kill']} "
                          f"stored: {run['requests']} requests for {run['stored']} samples "
                          f"({run['extra_requests']} extra: in flight at the kill); rows "
                          f"{'ok' if run['rows_ok'] else run['problem']}", file=sys.stderr)
            # one collector's throughput against the bare runtime and the ideal
            single = {}
            roots = [("", ROOT)] + ([(" (compared)", args.compare.resolve())]
                                    if args.compare else [])
            for database in databases:
                best: dict[str, dict] = {}
                for _ in range(max(1, args.repeat)):
                    for label, root in roots:  # interleaved: the machine's load hits both alike
                        # each checkout creates its own store (their schemas may differ)
                        run = run_workers(database, 1, **{**common, "cold": True}, root=root)
                        if run["worker_errors"] or not run["rows_ok"]:
                            raise SystemExit(f"one collector ({database}{label}) failed: {run}")
                        if label not in best or run["draw_s"][0] < best[label]["draw_s"][0]:
                            best[label] = run
                for label, run in best.items():
                    single[database + label] = {"draw_s": run["draw_s"][0],
                                                "wall_s": run["wall_s"]}
            bare = min(bare_runtime(url, spec, data)[0] for _ in range(max(1, args.repeat)))
            ideal = wanted * args.latency / min(args.slots, args.concurrency)
            for database, figures in single.items():
                figures["ratio_to_bare"] = round(figures["draw_s"] / bare, 3)
                figures["ratio_to_ideal"] = round(figures["draw_s"] / ideal, 3)
                print(f"one collector ({database}): draws {wanted} samples in "
                      f"{figures['draw_s']:.3f} s (process {figures['wall_s']:.3f} s); bare "
                      f"runtime {bare:.3f} s, ideal {ideal:.3f} s: "
                      f"{figures['ratio_to_bare']}x bare, {figures['ratio_to_ideal']}x ideal",
                      file=sys.stderr)
            results["single_collector"] = single
            results["bare_runtime_s"] = round(bare, 3)
            results["ideal_s"] = round(ideal, 3)
    finally:
        server.terminate()
        server.wait(10)
    ratios = [r["requests_per_stored_sample"] for r in results["runs"] if "case" not in r]
    results["max_requests_per_stored_sample"] = max(ratios) if ratios else None
    results["all_rows_ok"] = all(r["rows_ok"] for r in results["runs"])
    results["target_met"] = bool(ratios) and max(ratios) <= TARGET and results["all_rows_ok"] \
        and not any(r["worker_errors"] for r in results["runs"])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
