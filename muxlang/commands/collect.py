"""``muxlang collect SPEC --dataset FILE [--samples K]``: K samples per pool model for every item.

Every sample is stored as it arrives (one transaction per request's samples), under its cache key
(backend, model id, sampling parameters, prompt hash, sample index); what is already stored is
never requested again. So a run that is interrupted, or killed with ``kill -9``, is continued by
running the same command again, and the store ends with exactly the samples of a clean run: none
duplicated (the key is unique), none lost (what was not stored is drawn). Failed requests are
reported and drawn again by the next run.

K defaults to each pool member's count in the spec (``model * k``); ``--samples K`` sets it for
every model. Models on ``replay`` backends are skipped: their samples come from ``muxlang import``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from muxlang.commands.options import backend_urls, positive_int, request_rate, select_runnable
from muxlang.errors import MuxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .mux spec file")
    parser.add_argument("--dataset", required=True, metavar="NAME_OR_FILE",
                        help="JSON lines of records (registered in the store by content hash), "
                             "or the name of a dataset already in the store")
    parser.add_argument("--samples", "-k", type=positive_int, metavar="K",
                        help="samples per model and item (default: each member's count in the pool)")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade whose pool models to sample (default: the last one)")
    parser.add_argument("--name", metavar="NAME",
                        help="dataset name in the store (default: from the file name)")
    parser.add_argument("--store", metavar="URL",
                        help="store URL or SQLite path (default: $MUXLANG_STORE, else "
                             "./muxlang.sqlite)")
    parser.add_argument("--backend", action="append", default=[], metavar="NAME=URL",
                        help="override a backend's URL (repeatable)")
    parser.add_argument("--concurrency", type=positive_int, metavar="N",
                        help="requests in flight per backend (overrides the spec)")
    parser.add_argument("--rate", type=request_rate, metavar="R",
                        help="request rate cap per backend, e.g. 20 or 20/s or 600/m")
    parser.add_argument("--no-progress", action="store_true", help="print no progress")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@dataclass
class Job:
    model: Any  # ir.Model
    messages: list[dict[str, str]]
    missing: list[int]


@dataclass
class Totals:
    wanted: int = 0
    stored_before: int = 0
    to_draw: int = 0
    drawn: int = 0
    from_cache: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    skipped_items: list[str] = field(default_factory=list)


def pool_members(runnable: Any, k: int | None) -> list[tuple[Any, Any, int]]:
    """(model, task, samples) for every model reachable from a mux or cascade, deduplicated."""
    from muxlang import ir

    found: dict[tuple[str, str], tuple[Any, Any, int]] = {}

    def visit(mux: ir.Mux) -> None:
        for member in mux.pool:
            if isinstance(member.member, ir.Mux):
                visit(member.member)
                continue
            count = k or member.samples
            key = (member.member.name, mux.task.name)
            if key not in found or found[key][2] < count:
                found[key] = (member.member, mux.task, count)

    for mux in (runnable.steps if isinstance(runnable, ir.Cascade) else [runnable]):
        visit(mux)
    return list(found.values())


def spend(t: Totals) -> str:
    """Tokens and money so far, for the progress line."""
    text = f"{t.tokens_in:,} in + {t.tokens_out:,} out tokens"
    if t.cost:
        text += f", ${t.cost:.4f}"
    return text


def run(args: argparse.Namespace) -> int:
    from muxlang.lang import load_spec
    from muxlang.store import Store, load_dataset_file, resolve_dataset
    from muxlang.prompts import render
    from muxlang.samples import SampleKey

    spec = load_spec(args.spec)
    runnable = select_runnable(spec, args.spec, args.mux)
    urls = backend_urls(args.backend, spec)
    members = pool_members(runnable, args.samples)
    replay = [m for m, _, _ in members if m.backend.kind == "replay"]
    members = [entry for entry in members if entry[0].backend.kind != "replay"]
    notes = []
    if replay:
        notes.append("skipped (replay backend; use `muxlang import`): "
                     + ", ".join(m.name for m in replay))
    if not members:
        raise MuxError(f"{args.spec}: every pool model uses a replay backend: nothing to collect")

    store = Store(args.store)
    try:
        gold = members[0][1].gold or "answer"
        if args.name is None and not os.path.isfile(args.dataset):
            info = resolve_dataset(store, args.dataset, gold)  # a dataset already in the store
        else:
            info = load_dataset_file(store, args.dataset, name=args.name, gold_field=gold)
        items = store.items(info)
        totals = Totals()
        jobs: list[tuple[SampleKey, Job]] = []
        for item in items:
            rendered: dict[str, Any] = {}
            for model, task, k in members:
                if task.name not in rendered:
                    try:
                        rendered[task.name] = render(task, item.record)
                    except MuxError as error:
                        rendered[task.name] = None
                        totals.skipped_items.append(f"{item.key}: {error}")
                messages = rendered[task.name]
                if messages is None:
                    continue
                jobs.append((SampleKey.for_model(model, messages), Job(model, messages,
                                                                       list(range(k)))))
        stored = store.get_samples_many([key for key, _ in jobs])
        todo: list[Job] = []
        for key, job in jobs:
            k = len(job.missing)
            totals.wanted += k
            job.missing = store.missing_indices(key, k, stored[key.hash])
            totals.stored_before += k - len(job.missing)
            if job.missing:
                todo.append(job)
        totals.to_draw = sum(len(job.missing) for job in todo)
        header = (f"collect: {len(members)} model(s) x {len(items)} items of dataset "
                  f"'{info.name}' = {totals.wanted} samples in {store.display_url}; "
                  f"{totals.stored_before} already stored, {totals.to_draw} to draw")
        if not args.json:
            print(header, file=sys.stderr)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for message in totals.skipped_items[:5]:
            print(f"warning: item {message}", file=sys.stderr)

        run_id = store.start_run("collect", {
            "dataset": info.name, "dataset_hash": info.content_hash, "samples": args.samples,
            "models": [m.name for m, _, _ in members]},
            spec_path=str(args.spec), spec_text=spec.text)
        status = "ok"
        started = time.perf_counter()
        try:
            if todo:
                status = _draw(store, run_id, runnable, todo, totals, args, urls)
        except BaseException as error:
            store.finish_run(run_id, "failed", {"error": str(error)[:500]})
            raise
        if status == "ok" and totals.failed:
            status = "failed"
        summary = {"dataset": info.name, "items": len(items), "wanted": totals.wanted,
                   "stored_before": totals.stored_before, "drawn": totals.drawn,
                   "from_cache": totals.from_cache, "failed": totals.failed,
                   "tokens_in": totals.tokens_in, "tokens_out": totals.tokens_out,
                   "cost": totals.cost, "seconds": round(time.perf_counter() - started, 3),
                   "skipped_items": len(totals.skipped_items), "errors": totals.errors}
        store.finish_run(run_id, status, summary)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"store": store.display_url, "status": status, **summary},
                         sort_keys=True))
    else:
        line = (f"{'interrupted' if status == 'interrupted' else 'done'}: {totals.drawn} samples "
                f"drawn, {totals.stored_before + totals.from_cache} from the store, "
                f"{totals.failed} failed; {totals.tokens_in:,} input + {totals.tokens_out:,} "
                f"output tokens" + (f", ${totals.cost:.4f}" if totals.cost else "")
                + f" in {summary['seconds']:.1f}s")
        print(line, file=sys.stderr)
        for error, count in sorted(totals.errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {count} x {error}", file=sys.stderr)
        if totals.failed or status == "interrupted":
            print("run the same command again to draw what is missing", file=sys.stderr)
    if status == "interrupted":
        return 130
    return 1 if totals.failed or totals.skipped_items else 0


def _draw(store: Any, run_id: int, runnable: Any, todo: list[Job], totals: Totals,
          args: argparse.Namespace, urls: dict[str, str]) -> str:
    """Draw the missing samples through the runtime (the store is its cache). Returns a status."""
    from muxlang.runtime.executor import Runtime, backends_of
    from muxlang.runtime.progress import Progress
    from muxlang.samples import Sample
    from muxlang.store.cache import StoreCache

    backends = [b for b in backends_of(runnable) if b.kind != "replay"]
    cache = StoreCache(store, run_id)
    runtime = Runtime(backends, urls=urls, concurrency=args.concurrency,
                      rate=args.rate, cache=cache)
    progress = Progress(totals.to_draw, enabled=not args.no_progress, label="samples")
    state = {"status": "ok"}

    async def one(job: Job) -> None:
        results = await runtime.sample(job.model, job.messages, job.missing)
        for result in results:
            if isinstance(result, Sample):
                if result.cached:  # another process stored it meanwhile
                    totals.from_cache += 1
                    continue
                totals.drawn += 1
                totals.tokens_in += result.input_tokens or 0
                totals.tokens_out += result.output_tokens or 0
                totals.cost += ((result.input_tokens or 0) * job.model.price_input
                                + (result.output_tokens or 0) * job.model.price_output)
            else:
                totals.failed += 1
                message = f"{job.model.name}: {result.error}"
                totals.errors[message] = totals.errors.get(message, 0) + 1
        progress.update(totals.drawn + totals.failed + totals.from_cache, errors=totals.failed,
                        detail=spend(totals))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if state["status"] == "interrupted":
                os._exit(130)
            state["status"] = "interrupted"
            if task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in todo:
            queue.put_nowait(job)

        async def worker() -> None:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one(job)

        workers = min(len(todo), 2 * runtime.total_concurrency + 4)
        beat = asyncio.ensure_future(progress.heartbeat())
        try:
            async with runtime:
                await asyncio.gather(*(worker() for _ in range(workers)))
        except asyncio.CancelledError:
            state["status"] = "interrupted"
        finally:
            beat.cancel()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        state["status"] = "interrupted"
    finally:
        progress.stop()
    return state["status"]
