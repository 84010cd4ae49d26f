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
from typing import TYPE_CHECKING, Any

from muxlang.commands.options import backend_urls, positive_int, request_rate, select_runnable

if TYPE_CHECKING:
    from muxlang.results import CollectResult


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
    parser.add_argument("--lease", type=positive_seconds, metavar="SECONDS",
                        help="how long a worker's claims outlive it: collections of the same "
                             "samples may run at once (processes, hosts on one PostgreSQL "
                             "store); each draws only what it claimed, and a killed worker's "
                             "claims pass to the others after this time (default 30)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="collect only for the dataset's first N items")
    parser.add_argument("--log-samples", metavar="FILE",
                        help="write every sample drawn as one JSON line to FILE (the fields of "
                             "run --log-samples)")
    parser.add_argument("--dry-run", action="store_true",
                        help="send nothing: print the plan (requests per backend, samples, n > 1 "
                             "use, samples already stored, estimated tokens and cost)")
    parser.add_argument("--no-progress", action="store_true", help="print no progress")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, not {text!r}")
    return value


def spend(t: CollectResult) -> str:
    """Tokens and money so far, for the progress line."""
    text = f"{t.tokens_in:,} in + {t.tokens_out:,} out tokens"
    if t.cost:
        text += f", ${t.cost:.4f}"
    return text


def run(args: argparse.Namespace) -> int:
    from muxlang.session import Session, load

    spec = load(args.spec)
    runnable = select_runnable(spec, args.spec, args.mux)
    urls = backend_urls(args.backend, spec)
    session = Session(args.store, urls, concurrency=args.concurrency, rate=args.rate)
    with session.collection(spec, args.dataset, args.samples, mux=runnable,
                            name=args.name, lease=args.lease, limit=args.limit) as collection:
        counts = collection.counts
        if args.dry_run:
            from muxlang.dryrun import collect_plan

            plan = collect_plan(collection)
            if args.json:
                print(json.dumps(plan.to_dict(), sort_keys=True))
            else:
                for line in plan.lines():
                    print(line)
            return 0
        if not args.json:
            print(f"collect: {len(counts.models)} model(s) x {counts.items} items of dataset "
                  f"'{counts.dataset}' = {counts.wanted} samples in {counts.store}; "
                  f"{counts.stored_before} already stored, {counts.to_draw} to draw",
                  file=sys.stderr)
        for note in counts.notes:
            print(f"note: {note}", file=sys.stderr)
        for message in counts.skipped[:5]:
            print(f"warning: item {message}", file=sys.stderr)
        if args.log_samples:
            totals = _draw_logged(collection, args)
        else:
            totals = _draw(collection, args)
    if args.json:
        print(json.dumps({"store": totals.store, "status": totals.status, **totals.summary()},
                         sort_keys=True))
    else:
        line = (f"{'interrupted' if totals.status == 'interrupted' else 'done'}: {totals.drawn} "
                f"samples drawn, {totals.stored_before + totals.from_cache} from the store, "
                f"{totals.failed} failed; {totals.tokens_in:,} input + {totals.tokens_out:,} "
                f"output tokens" + (f", ${totals.cost:.4f}" if totals.cost else "")
                + f" in {totals.seconds:.1f}s")
        print(line, file=sys.stderr)
        for error, count in sorted(totals.errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {count} x {error}", file=sys.stderr)
        if totals.failed or totals.status == "interrupted":
            print("run the same command again to draw what is missing", file=sys.stderr)
    if totals.status == "interrupted":
        return 130
    return 1 if totals.failed or totals.skipped_items else 0


def _draw_logged(collection: Any, args: argparse.Namespace) -> Any:
    """``_draw`` with every sample written to ``--log-samples FILE`` as it arrives."""
    from muxlang.errors import MuxError
    from muxlang.jsonl import dumps_line
    from muxlang.sample_log import sample_object
    from muxlang.scoring import Scorer

    scorers: dict[str, Any] = {}
    tasks = {model.name: task for model, task, _ in collection.members}
    try:
        log = open(args.log_samples, "w", encoding="utf-8")
    except OSError as error:
        raise MuxError(f"cannot write {args.log_samples}: {error.strerror}") from None

    def on_samples(item: Any, model: Any, messages: Any, results: list) -> None:
        task = tasks.get(model.name)
        scorer = scorers.get(model.name)
        if scorer is None and task is not None:
            scorer = scorers[model.name] = Scorer(task)
        for result in results:
            log.write(dumps_line(sample_object(item, model, messages, result, scorer)))

    collection.on_samples = on_samples
    try:
        return _draw(collection, args)
    finally:
        log.close()


def _draw(collection: Any, args: argparse.Namespace) -> Any:
    """Draw what is missing, with progress on stderr; Ctrl-C or SIGTERM stops it (a second
    Ctrl-C exits at once). Returns the collection's final counts."""
    from muxlang.runtime.progress import Progress

    counts = collection.counts
    progress = Progress(counts.to_draw, enabled=not args.no_progress, label="samples")
    state = {"interrupted": False}

    def on_progress(totals: Any) -> None:
        progress.update(totals.drawn + totals.failed + totals.from_cache, errors=totals.failed,
                        detail=spend(totals))

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if state["interrupted"]:
                os._exit(130)
            state["interrupted"] = True
            if task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        beat = asyncio.ensure_future(progress.heartbeat())
        try:
            return await collection.adraw(on_progress)
        finally:
            beat.cancel()

    if not collection.todo:
        return collection.draw()
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        counts.status = "interrupted"
        collection.close()
        return counts
    finally:
        progress.stop()
