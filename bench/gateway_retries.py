"""Retries behind a gateway's in-flight cap (issue 15, item 3), before and after spreading them.

A scripted server (loopback) stands in for LiteLLM's proxy with an in-flight cap: past ``--cap``
requests being handled at once, it answers ``503`` with ``Retry-After: 1``. ``--requests``
requests are sent at once (concurrency as many), one sample each, with ``--retries`` retries
and a 60 s retry time. Prints one JSON line per client: retries, 503s, samples lost, seconds.

``--old REV`` also measures ``muxlang/runtime/backends.py`` as it was at git revision REV (loaded
from ``git show``), for the before/after figure::

    .venv/bin/python -m bench.gateway_retries --old f984afc --rounds 5
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from muxlang import ir
from muxlang.runtime.executor import Runtime
from tests.support.scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]


def old_module(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:muxlang/runtime/backends.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_backends.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_backends", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["old_backends"] = module
    spec.loader.exec_module(module)
    return module


def measure(args, module=None) -> dict:
    server = ScriptedServer(in_flight_cap=args.cap, cap_retry_after=1,
                            latency=args.latency, log=False).start()
    backend = ir.Backend(name="gw", kind="openai", url=server.openai_url, retries=args.retries,
                         retry_time=60.0, concurrency=args.requests, supports_n=False,
                         timeout=30.0)
    model = ir.Model(name="m", backend=backend, id="m", seed=1)
    clients = None
    if module is not None:
        settings = module.BackendSettings.resolve(backend, environ={})
        clients = {"gw": module.make_backend(settings)}

    async def go():
        async with Runtime([backend], clients=clients) as runtime:
            start = time.monotonic()
            got = await asyncio.gather(*(
                runtime.sample(model, [{"role": "user", "content": f"q{i}"}], [0])
                for i in range(args.requests)))
            return got, runtime.clients["gw"].stats, time.monotonic() - start

    try:
        results, stats, seconds = asyncio.run(go())
    finally:
        server.stop()
    lost = sum(1 for (r,) in results if not hasattr(r, "text"))
    return {"retries": stats.retries, "capped_503": server.capped, "lost": lost,
            "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_retries")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--cap", type=int, default=1, help="requests the server handles at once")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", metavar="REV", help="also measure backends.py at REV")
    args = parser.parse_args()
    clients = [("now", None)]
    if args.old:
        clients.insert(0, (f"at {args.old}", old_module(args.old)))
    for name, module in clients:
        rounds = [measure(args, module) for _ in range(args.rounds)]
        print(json.dumps({"client": name, "requests": args.requests, "cap": args.cap,
                          "retries": [r["retries"] for r in rounds],
                          "capped_503": [r["capped_503"] for r in rounds],
                          "lost": [r["lost"] for r in rounds],
                          "seconds": [r["seconds"] for r in rounds]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
