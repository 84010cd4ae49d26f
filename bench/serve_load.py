"""Load on ``muxlang serve`` against a scripted server, versus the same records through ``run``.

The scripted model server runs in its own process (20 ms per request, 64 slots), and so does
``muxlang serve`` (``python -m muxlang serve``, as a user starts it). The spec: 3 models x 3
samples per question, SLM-MUX. Measured in one run:

  (run)   ``Session.run`` over the 500 records (what ``muxlang run`` does): wall time, and each
          record's own latency (``RecordResult.latency``);
  (serve) 500 chat completion requests (``mux.record`` = the same records) from 64 concurrent
          clients (one keep-alive connection each): wall time, the latency each client saw, and
          from the ``mux`` trace the record's run time (``latency``, as run's) and its wait in
          the server's queue (``queued``);
  (one)   100 requests one at a time through serve, and the same 100 records one at a time
          through a ``Session.runner`` (no contention: a record's run is the backend's latency
          plus muxlang's own work).

The server's added latency is what a client waits beyond the record's run: HTTP, JSON and
scheduling, and (under load) the server's queue, reported apart. Targets: serve throughput >=
0.9x run's; added p50 <= 5 ms (at load, queue wait apart, and one at a time). Answers are checked
to be the same as run's, record by record. The last line printed is one JSON object.

    .venv/bin/python bench/serve_load.py [--requests 500] [--clients 64] [--latency 0.02]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("m1", "m2", "m3")
PROFILE = os.environ.get("SERVE_PROFILE", "").split() # e.g. "-m cProfile -o /tmp/serve.prof"
SAMPLES = 3


def start_backend(latency: float, slots: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted_server", "--port", "0",
         "--latency", str(latency), "--slots", str(slots), "--no-log"],
        cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("URL "):
        proc.kill()
        raise SystemExit(f"scripted server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def start_serve(spec: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, *PROFILE, "-m", "muxlang", "serve", str(spec), "--port", "0", "--queue",
         "4096"],
        cwd=str(ROOT), stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("listening on "):
            return proc, line.split()[2]  # .../v1
    proc.kill()
    raise SystemExit("muxlang serve did not start:\n" + "".join(seen))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def spec_text(url: str, concurrency: int) -> str:
    models = "\n".join(f'model {m} {{\n  backend = local\n  id = "{m}"\n  seed = 1\n}}'
                       for m in MODELS)
    pool = ", ".join(f"{m} * {SAMPLES}" for m in MODELS)
    return f"""
backend local {{
  kind = openai
  url = "{url}/v1"
  concurrency = {concurrency}
  timeout = 30s
  retries = 2
}}
{models}
task t {{
  user = "Solve: {{question}}"
  extract = final_number
  equivalence = numeric
}}
mux bench {{
  task = t
  pool = [{pool}]
}}
"""


def records(count: int, offset: int = 0) -> list[dict]:
    return [{"id": i, "question": f"What is {i} + {i * 7}?"} for i in range(offset, offset + count)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, batch: list[dict], clients: int) -> tuple[float, list[dict]]:
    """Send ``batch`` as chat requests from ``clients`` concurrent clients, each on one keep-alive
    connection; (wall, per request). A lean HTTP/1.1 client (asyncio streams), as load tools
    are, so that the client's own CPU takes little from the server on a small machine."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    path = "/" + url.split("//", 1)[1].split("/", 1)[1] + "/chat/completions"
    queue: asyncio.Queue = asyncio.Queue()
    for index, record in enumerate(batch):
        queue.put_nowait((index, record))
    out: list[dict] = [{} for _ in batch]

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                try:
                    index, record = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = json.dumps({"model": "bench", "messages": [],
                                   "mux": {"record": record, "trace": True}}).encode()
                start = time.perf_counter()
                writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                             "\r\n\r\n".encode() + body)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = next(int(line.split(":", 1)[1]) for line in lines
                              if line.lower().startswith("content-length:"))
                payload = json.loads(await reader.readexactly(length))
                seen = time.perf_counter() - start
                if status != 200:
                    raise SystemExit(f"request {index}: {status} {payload}")
                trace = payload["mux"]
                out[index] = {"latency": seen, "run": trace["latency"],
                              "queued": trace["queued"],
                              "text": payload["choices"][0]["message"]["content"],
                              "model": trace["model"], "answer": trace["answer"]}
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(clients, len(batch)))))
    return time.perf_counter() - start, out


def run_session(spec, batch: list[dict]) -> tuple[float, list]:
    import muxlang

    start = time.perf_counter()
    results = muxlang.Session().run(spec, batch)
    return time.perf_counter() - start, results


def run_one_at_a_time(spec, batch: list[dict]) -> list[float]:
    import muxlang

    runner = muxlang.Session().runner(spec)

    async def main() -> list[float]:
        seen = []
        async with runner:
            for record in batch:
                start = time.perf_counter()
                result = await runner.run(record)
                assert result.error is None, result.error
                seen.append(time.perf_counter() - start)
        return seen

    from muxlang.runtime.loop import run

    try:
        return run(main())
    finally:
        runner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--single", type=int, default=100, help="requests sent one at a time")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of run and serve over the records (medians reported)")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--slots", type=int, default=64)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import muxlang

    backend, url = start_backend(args.latency, args.slots)
    tmp = tempfile.TemporaryDirectory()
    serve = None
    try:
        path = Path(tmp.name) / "bench.mux"
        path.write_text(spec_text(url, (3 * args.slots + 1) // 2))
        spec = muxlang.load(path)
        serve, serve_url = start_serve(path)
        from muxlang.runtime.loop import run

        batch = records(args.requests)
        # warm-up: imports, connections, n probes on both sides
        run_session(spec, records(20, 10_000))
        run(load(serve_url, records(20, 20_000), args.clients))
        rounds = []  # (run wall, run results, serve wall, served): run and serve take turns
        cpu = {"run": 0.0, "serve": 0.0, "client": 0.0}
        for _ in range(args.rounds):
            mine = time.process_time()
            run_wall, run_results = run_session(spec, batch)
            cpu["run"] += time.process_time() - mine
            theirs, mine = process_cpu(serve.pid), time.process_time()
            serve_wall, served = run(load(serve_url, batch, args.clients))
            cpu["serve"] += process_cpu(serve.pid) - theirs
            cpu["client"] += time.process_time() - mine
            rounds.append((run_wall, run_results, serve_wall, served))
        single = records(args.single, 30_000)
        one_run = run_one_at_a_time(spec, single)
        _, one_served = run(load(serve_url, single, 1))
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(60)
        backend.terminate()
        backend.wait(10)
        tmp.cleanup()

    same = sum(1 for _, run_results, _, served in rounds
               for r, s in zip(run_results, served)
               if (r.text, r.model, r.answer) == (s["text"], s["model"], s["answer"]))
    run_wall = statistics.median(r[0] for r in rounds)
    serve_wall = statistics.median(r[2] for r in rounds)
    run_lat = [r.latency for _, results, _, _ in rounds for r in results]
    served_all = [s for _, _, _, served in rounds for s in served]
    seen = [s["latency"] for s in served_all]
    queued = [s["queued"] for s in served_all]
    added = [s["latency"] - s["run"] - s["queued"] for s in served_all]
    one_seen = [s["latency"] for s in one_served]
    one_added = [s["latency"] - s["run"] - s["queued"] for s in one_served]
    ratio = run_wall / serve_wall  # throughput of serve / throughput of run
    single_gap = statistics.median(one_seen) - statistics.median(one_run)
    ms = 1000.0
    print(f"{args.requests} records x {len(MODELS)} models x {SAMPLES} samples; scripted backend "
          f"{args.latency * ms:.0f} ms, {args.slots} slots; serve and the backend in their own "
          f"processes; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.rounds} rounds, run and serve taking turns; walls are the medians: run "
          + ", ".join(f"{r[0]:.3f}" for r in rounds) + " s; serve "
          + ", ".join(f"{r[2]:.3f}" for r in rounds) + " s")
    print(f"run   (Session.run)       : {run_wall:6.3f} s  {args.requests / run_wall:7.1f} "
          f"records/s  record latency p50 {pct(run_lat, 50) * ms:6.1f} ms  "
          f"p99 {pct(run_lat, 99) * ms:6.1f} ms")
    print(f"serve ({args.clients} clients)       : {serve_wall:6.3f} s  "
          f"{args.requests / serve_wall:7.1f} requests/s  client latency p50 "
          f"{pct(seen, 50) * ms:6.1f} ms  p99 {pct(seen, 99) * ms:6.1f} ms")
    print(f"serve throughput / run's  : {ratio:.3f}  (target >= 0.9)")
    print(f"added by serve at load    : p50 {pct(added, 50) * ms:.2f} ms  p99 "
          f"{pct(added, 99) * ms:.2f} ms  (HTTP, JSON, scheduling; target p50 <= 5 ms) + "
          f"queue wait p50 {pct(queued, 50) * ms:.1f} ms  p99 {pct(queued, 99) * ms:.1f} ms")
    print(f"one request at a time     : serve p50 {statistics.median(one_seen) * ms:.2f} ms vs "
          f"a runner's record p50 {statistics.median(one_run) * ms:.2f} ms: +{single_gap * ms:.2f}"
          f" ms; beyond the record's run p50 {pct(one_added, 50) * ms:.2f} ms  p99 "
          f"{pct(one_added, 99) * ms:.2f} ms")
    per = args.requests * args.rounds / 1000.0
    print(f"CPU per record            : run {cpu['run'] / per:.2f} ms; serve process "
          f"{cpu['serve'] / per:.2f} ms + load client {cpu['client'] / per:.2f} ms (2 CPUs "
          "shared with the backend: when they are busy, throughput follows CPU)")
    print(f"answers equal to run's    : {same} of {args.requests * args.rounds}")
    result = {
        "requests": args.requests, "clients": args.clients, "latency_s": args.latency,
        "rounds": args.rounds, "run_walls_s": [round(r[0], 4) for r in rounds],
        "serve_walls_s": [round(r[2], 4) for r in rounds],
        "slots": args.slots, "run_s": round(run_wall, 4), "serve_s": round(serve_wall, 4),
        "run_per_s": round(args.requests / run_wall, 2),
        "serve_per_s": round(args.requests / serve_wall, 2),
        "throughput_ratio": round(ratio, 4),
        "run_p50_ms": round(pct(run_lat, 50) * ms, 2), "run_p99_ms": round(pct(run_lat, 99) * ms, 2),
        "serve_p50_ms": round(pct(seen, 50) * ms, 2), "serve_p99_ms": round(pct(seen, 99) * ms, 2),
        "added_p50_ms": round(pct(added, 50) * ms, 3), "added_p99_ms": round(pct(added, 99) * ms, 3),
        "queued_p50_ms": round(pct(queued, 50) * ms, 2),
        "queued_p99_ms": round(pct(queued, 99) * ms, 2),
        "single_serve_p50_ms": round(statistics.median(one_seen) * ms, 3),
        "single_run_p50_ms": round(statistics.median(one_run) * ms, 3),
        "single_added_p50_ms": round(single_gap * ms, 3),
        "single_beyond_run_p50_ms": round(pct(one_added, 50) * ms, 3),
        "cpu_ms_per_record": {k: round(v / per, 3) for k, v in cpu.items()},
        "same_answers": same, "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "targets_met": ratio >= 0.9 and pct(added, 50) * ms <= 5 and single_gap * ms <= 5,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
