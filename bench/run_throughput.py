"""Throughput of ``muxlang run``'s executor against a scripted server, versus a threaded client.

500 questions x 3 models x 3 samples against the scripted server (its own process, so it does not
share the client's event loop) with a fixed 20 ms latency and 64 server slots. Measured in one run:

  (a) muxlang, n = 1 fan-out (4500 requests)
  (b) muxlang, n = 3 in one request (1500 requests)
  (c) a straightforward client as the reference code does it: 10 worker threads, each question's
      samples one after another, a new connection per request (urllib)

The ideal of a configuration is requests x 20 ms / 64 (the server's capacity). Targets: (a) within
1.15x of its ideal and at least 6x faster than (c). The last line printed is one JSON object.
The client CPU time and load average are printed too: on a 2-core machine the client and server
each need most of a core, so anything else running slows (a) and (b) far more than (c).

    .venv/bin/python bench/run_throughput.py [--questions 500] [--latency 0.02] [--slots 64]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("m1", "m2", "m3")
SAMPLES = 3


def start_server(latency: float, slots: int) -> tuple[subprocess.Popen, str]:
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


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
        return json.loads(response.read())


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def spec_text(url: str, n: bool, concurrency: int) -> str:
    models = "\n".join(f"""
model {m} {{
  backend = local
  id = "{m}"
  seed = 1
}}""" for m in MODELS)
    pool = ", ".join(f"{m} * {SAMPLES}" for m in MODELS)
    return f"""
backend local {{
  kind = openai
  url = "{url}/v1"
  concurrency = {concurrency}
  timeout = 30s
  retries = 2
  n = {'true' if n else 'false'}
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


def questions(count: int) -> list[dict]:
    return [{"id": i, "question": f"What is {i} + {i * 7}?"} for i in range(count)]


def run_muxlang(url: str, records: list[dict], *, n: bool, concurrency: int) -> tuple[float, int]:
    """Wall time of the executor over all records (spec loaded and plan built beforehand)."""
    from muxlang.compiler import build_plan
    from muxlang.lang import load_spec
    from muxlang.runtime.executor import PlanExecutor, Runtime, backends_of
    from muxlang.runtime.stream import run_records

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mux"
        path.write_text(spec_text(url, n, concurrency))
        spec = load_spec(path)
    runnable = spec.runnable("bench")
    plan = build_plan(spec, runnable)
    lines = [json.dumps(r) + "\n" for r in records]
    out: list[str] = []

    async def source():
        for number, line in enumerate(lines, 1):
            yield number, line

    async def main() -> float:
        runtime = Runtime(backends_of(runnable))
        executor = PlanExecutor(plan, runtime)
        in_flight = max(16, 2 * -(-runtime.total_concurrency // executor.requests_per_record) + 8)
        start, cpu = time.perf_counter(), time.process_time()
        async with runtime:
            summary = await run_records(executor, source(), out.append, in_flight=in_flight)
        elapsed = time.perf_counter() - start
        cpu_used[0] = time.process_time() - cpu
        assert summary.failed == 0, summary
        return elapsed, sum(c.stats.requests for c in runtime.clients.values())

    from muxlang.runtime.loop import run

    cpu_used = [0.0]
    elapsed, requests = run(main())
    assert len(out) == len(records)
    LAST_CPU[0] = cpu_used[0]
    return elapsed, requests


LAST_CPU = [0.0]  # client CPU seconds of the last run_muxlang (the run itself, no spec loading)


def run_threaded(url: str, records: list[dict], workers: int = 10) -> tuple[float, int]:
    """The reference pattern: per question, every model's samples one after another."""
    from muxlang.ir import Call
    from muxlang.stdlib.registry import make_equivalence, make_extractor

    extract = make_extractor(Call("final_number"))
    key = make_equivalence(Call("numeric")).key
    count = [0]
    lock = threading.Lock()

    def ask(model: str, prompt: str, seed: int) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0.3, "seed": seed}).encode()
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        with lock:
            count[0] += 1
        return payload["choices"][0]["message"]["content"]

    def solve(record: dict) -> str | None:
        prompt = f"Solve: {record['question']}"
        best = None
        for model in MODELS:
            answers = [extract(ask(model, prompt, 1 + s)) for s in range(SAMPLES)]
            keys = Counter(key(a) for a in answers if a is not None)
            if keys:
                top, votes = keys.most_common(1)[0]
                if best is None or votes > best[0]:
                    best = (votes, top)
        return best[1] if best else None

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(solve, records))
    return time.perf_counter() - start, count[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="muxlang's per-backend cap on requests in flight (default: 1.5x "
                             "the server's slots, so a queue at the server keeps every slot busy "
                             "while the client handles answers)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    records = questions(args.questions)
    concurrency = args.concurrency or (3 * args.slots + 1) // 2
    server, url = start_server(args.latency, args.slots)
    try:
        # warm-up: imports, connections, the server's first requests
        run_muxlang(url, records[:20], n=False, concurrency=concurrency)
        load_before = os.getloadavg()[0]
        server_cpu, client_cpu = process_cpu(server.pid), time.process_time()
        held_before = server_stats(url)
        a_time, a_requests = run_muxlang(url, records, n=False, concurrency=concurrency)
        server_cpu = process_cpu(server.pid) - server_cpu
        client_cpu = LAST_CPU[0]
        held = server_stats(url)
        held_s = held["held_seconds"] - held_before["held_seconds"]
        b_time, b_requests = run_muxlang(url, records, n=True, concurrency=concurrency)
        c_time, c_requests = run_threaded(url, records, args.workers)
    finally:
        server.terminate()
        server.wait(10)

    def ideal(requests: int) -> float:
        return requests * args.latency / args.slots

    a_ideal, b_ideal, c_ideal = ideal(a_requests), ideal(b_requests), ideal(c_requests)
    print(f"{args.questions} questions x {len(MODELS)} models x {SAMPLES} samples; server latency "
          f"{args.latency * 1000:.0f} ms, {args.slots} slots (separate process)")
    print(f"(a) muxlang n=1 fan-out : {a_time:7.3f} s  {a_requests:5d} requests  ideal "
          f"{a_ideal:.3f} s  ratio {a_time / a_ideal:.3f}")
    print(f"(b) muxlang n=3         : {b_time:7.3f} s  {b_requests:5d} requests  ideal "
          f"{b_ideal:.3f} s  ratio {b_time / b_ideal:.3f}")
    print(f"(c) threaded, 10 workers: {c_time:7.3f} s  {c_requests:5d} requests  "
          f"(its floor: {c_requests * args.latency / args.workers:.3f} s)")
    print(f"(a) is {c_time / a_time:.2f}x faster than (c); (b) is {c_time / b_time:.2f}x faster")
    print(f"during (a): the server's slots were busy {held_s / (args.slots * a_time):.0%} of the "
          f"time; a {args.latency * 1000:.0f} ms sleep really took "
          f"{held_s / max(a_requests, 1) * 1000:.2f} ms on average (timer overshoot), so the "
          f"server alone cannot go faster than {held_s / args.slots:.3f} s = "
          f"{held_s / args.slots / a_ideal:.3f}x ideal")
    print(f"during (a): client CPU {client_cpu:.3f} s, server CPU {server_cpu:.3f} s, "
          f"1-min load average {load_before:.2f} on {os.cpu_count()} CPUs (other processes "
          f"on the machine slow both sides)")
    result = {
        "questions": args.questions, "models": len(MODELS), "samples": SAMPLES,
        "latency_s": args.latency, "slots": args.slots, "concurrency": concurrency,
        "fanout_s": round(a_time, 4), "fanout_requests": a_requests,
        "n3_s": round(b_time, 4), "n3_requests": b_requests,
        "threaded_s": round(c_time, 4), "threaded_requests": c_requests,
        "ideal_s": round(a_ideal, 4), "n3_ideal_s": round(b_ideal, 4),
        "ratio_to_ideal": round(a_time / a_ideal, 4),
        "n3_ratio_to_ideal": round(b_time / b_ideal, 4),
        "speedup_vs_threaded": round(c_time / a_time, 3),
        "n3_speedup_vs_threaded": round(c_time / b_time, 3),
        "fanout_client_cpu_s": round(client_cpu, 3), "fanout_server_cpu_s": round(server_cpu, 3),
        "load_average": round(load_before, 2), "cpus": os.cpu_count(),
        "server_slot_busy": round(held_s / (args.slots * a_time), 4),
        "server_floor_s": round(held_s / args.slots, 4),
        "targets_met": a_time / a_ideal <= 1.15 and c_time / a_time >= 6,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
