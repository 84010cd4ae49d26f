"""``muxlang run SPEC --input IN.jsonl --output OUT.jsonl``: run a mux or cascade over records.

One output line per non-blank input line, in input order, with ``answer``, ``model``,
``confidence``, ``text``, ``votes``, ``missing``, ``error``, ``tokens`` and ``latency``, and
``gold``/``correct`` for records that hold the task's gold field (every field: docs/output.md). Exit status 0 when
every record got an answer, 1 when any record failed (bad input included) or, with ``--strict``,
was answered with a member missing or some of a member's samples failed; 130 on Ctrl-C (the lines
already written stay). A backend or model that stops taking requests, goes down or comes back is
said once on stderr, when it happens; the records it fails then say only their short reason.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from muxlang.commands.options import backend_urls, positive_int, request_rate, select_runnable
from muxlang.errors import MuxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .mux spec file")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade to run (default: the last one the spec declares)")
    parser.add_argument("-i", "--input", required=True, metavar="IN.jsonl",
                        help="JSON lines of records ('-' for stdin)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                        help="where to write one JSON line per record ('-' for stdout)")
    parser.add_argument("--backend", action="append", default=[], metavar="NAME=URL",
                        help="override a backend's URL (repeatable); also "
                             "MUXLANG_BACKEND_<NAME>_URL, and MUXLANG_BACKEND_<NAME>_KEY for its key")
    parser.add_argument("--concurrency", type=positive_int, metavar="N",
                        help="requests in flight per backend (overrides the spec)")
    parser.add_argument("--rate", type=request_rate, metavar="R",
                        help="request rate cap per backend, e.g. 20 or 20/s or 600/m")
    parser.add_argument("--in-flight", type=positive_int, metavar="N",
                        help="records in progress at once (default: from the concurrency)")
    parser.add_argument("--store", metavar="URL",
                        help="cache samples in this sample store (URL or SQLite path): what is "
                             "stored is not drawn again, what is drawn is stored")
    parser.add_argument("--cache", action="store_true",
                        help="cache samples in the default store ($MUXLANG_STORE, else "
                             "./muxlang.sqlite), as --store URL does in that one")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when a record was answered without every sample it "
                             "asked for (a member missing, or some of its samples failed)")
    parser.add_argument("--keep-fields", metavar="A,B", type=_field_list, default=(),
                        help="copy these input fields into each output line (under 'fields')")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="run only the first N records of the input")
    parser.add_argument("--log-samples", metavar="FILE",
                        help="write every sample as one JSON line to FILE: record id, member, "
                             "sample index, prompt, raw text, extracted answer, equivalence key, "
                             "error, tokens, latency")
    parser.add_argument("--dry-run", action="store_true",
                        help="send nothing: print the plan (requests per backend, samples, n > 1 "
                             "use, samples in the store, estimated tokens and cost)")
    parser.add_argument("--no-progress", action="store_true", help="print no progress")


def _field_list(text: str) -> tuple[str, ...]:
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    if not fields:
        raise argparse.ArgumentTypeError("expected field names separated by commas")
    return fields


class _Lines:
    """The executor as ``run_records`` sees it: each record's line is the runner's ``line``
    (gold and correct when the record holds the gold field, kept fields), and scored records are
    counted for the final line; with a sample log, each record's samples are marked as its."""

    def __init__(self, runner: Any, keep: tuple[str, ...], log: Any = None):
        self.runner, self.keep, self.log = runner, keep, log
        self.scored = self.correct = 0

    async def run_record(self, record: Any) -> Any:
        if self.log is not None:
            self.log.record(record)  # this task's context: the executor's tasks inherit it
        result = await self.runner.executor.run_record(record)
        line = self.runner.line(record, result, self.keep)
        if line.get("correct") is not None:
            self.scored += 1
            self.correct += bool(line["correct"])
        return _Done(result, line)


class _Done:
    def __init__(self, result: Any, line: dict[str, Any]):
        self._result, self._line = result, line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def output(self) -> dict[str, Any]:
        return self._line


async def _first(lines: Any, limit: int | None) -> Any:
    """The first ``limit`` items of ``lines`` (all when None)."""
    count = 0
    try:
        async for item in lines:
            if limit is not None and count >= limit:
                return
            count += 1
            yield item
    finally:
        await lines.aclose()  # stops the reader thread


def _count_lines(path: str) -> int | None:
    """How many records ``path`` holds (its non-blank lines: blank ones get no output line), for
    progress; None when it cannot be read (the run then reports the error itself)."""
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if not line.isspace())
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    from muxlang.session import Session, describe_tie_breaks, load

    spec = load(args.spec)
    runnable = select_runnable(spec, args.spec, args.mux)
    urls = backend_urls(args.backend, spec)
    session = Session(args.store, urls, cache=args.store is not None or args.cache,
                      concurrency=args.concurrency, rate=args.rate, in_flight=args.in_flight,
                      warn=_warn)
    if args.dry_run:
        return _dry_run(args, session, spec, runnable)
    runner = session.runner(spec, runnable, source=args.input)
    try:
        for line in describe_tie_breaks(runner.info):
            print(line, file=sys.stderr, flush=True)
        status = _run_files(args, runner)
    except BaseException as error:
        runner.close(error=error)
        raise
    runner.close({0: "ok", 130: "interrupted"}.get(status, "failed"), {"exit_status": status})
    return status


def _dry_run(args: argparse.Namespace, session: Any, spec: Any, runnable: Any) -> int:
    from muxlang.dryrun import run_plan
    from muxlang.jsonl import parse_line

    def records() -> Any:
        count = 0
        stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8",
                                                           errors="surrogateescape")
        try:
            for line in stream:
                if not line.strip():
                    continue
                if args.limit is not None and count >= args.limit:
                    return
                count += 1
                try:
                    yield parse_line(line)
                except ValueError:
                    yield None  # counted as a record that cannot run
        finally:
            if stream is not sys.stdin:
                stream.close()

    try:
        plan = run_plan(session, spec, records(), runnable)
    except OSError as error:
        raise MuxError(f"cannot read {args.input}: {error.strerror or error}") from None
    for line in plan.lines():
        print(line)
    return 0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _run_files(args: argparse.Namespace, runner: Any) -> int:
    if args.input != "-" and args.output != "-" and Path(args.output).exists():
        try:
            same = Path(args.input).samefile(args.output)
        except OSError:
            same = False
        if same:  # opening the output for writing would empty the input before it is read
            raise MuxError(f"--output {args.output} is the input file; write the answers to "
                           "another file")
    if args.input == "-":
        source, in_stream, total = "<stdin>", sys.stdin, None
    else:
        source = args.input
        try:
            # bad bytes reach muxlang.jsonl.parse_line, which refuses them with their line
            in_stream = open(args.input, encoding="utf-8", errors="surrogateescape")
        except OSError as error:
            raise MuxError(f"cannot read {args.input}: {error.strerror}") from None
        total = _count_lines(args.input)
    if total is not None and args.limit is not None:
        total = min(total, args.limit)
    elif args.limit is not None:
        total = args.limit
    try:
        if args.output == "-":
            out_stream: IO[str] = sys.stdout
        else:
            try:
                out_stream = open(args.output, "w", encoding="utf-8")
            except OSError as error:
                raise MuxError(f"cannot write {args.output}: {error.strerror}") from None
        try:
            status = _run_loop(runner, in_stream, out_stream, source, total, args)
        except BaseException:
            if out_stream is not sys.stdout:
                try:
                    out_stream.close()
                except OSError:
                    pass  # the write error that stopped the run is the one to report
            raise
        if out_stream is not sys.stdout:
            try:
                out_stream.close()
            except OSError as error:
                raise MuxError(f"cannot write {args.output}: {error.strerror or error}") from None
        return status
    finally:
        if in_stream is not sys.stdin:
            in_stream.close()


def _run_loop(runner: Any, in_stream: IO[str], out_stream: IO[str], source: str,
              total: int | None, args: argparse.Namespace) -> int:
    from muxlang.runtime.progress import Progress
    from muxlang.runtime.stream import RunSummary, read_lines, run_records

    progress = Progress(total, enabled=not args.no_progress)
    summary = RunSummary()
    runtime = runner.runtime
    log_file = log = None
    if args.log_samples:
        from muxlang.jsonl import dumps_line
        from muxlang.sample_log import SampleLog

        try:
            log_file = open(args.log_samples, "w", encoding="utf-8")
        except OSError as error:
            raise MuxError(f"cannot write {args.log_samples}: {error.strerror}") from None
        log = SampleLog(lambda obj: log_file.write(dumps_line(obj)),
                        runner.scorer).attach(runtime)
    executor = _Lines(runner, tuple(args.keep_fields or ()), log)
    for client in runtime.clients.values():
        client.notify = progress.message  # one line when a backend stops, goes down, comes back

    def write(line: str) -> None:
        out_stream.write(line)
        out_stream.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interrupted = {"count": 0}

        def on_sigint() -> None:
            interrupted["count"] += 1
            if interrupted["count"] == 1:
                progress.message("interrupted: stopping; finished lines are kept")
                if task is not None:
                    task.cancel()
            else:
                os._exit(130)

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        beat = asyncio.ensure_future(progress.heartbeat())
        try:
            async with runner:
                await run_records(executor, _first(read_lines(in_stream), args.limit), write,
                                  source=source,
                                  in_flight=runner.in_flight, report=progress.message,
                                  on_done=lambda _result, failed: progress.advance(failed),
                                  summary=summary)
        except asyncio.CancelledError:
            summary.interrupted = True
        finally:
            beat.cancel()
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    from muxlang.runtime.loop import run as run_loop

    try:
        run_loop(main())
    except KeyboardInterrupt:
        summary.interrupted = True
    except BrokenPipeError:
        raise  # the reader went away (``| head``): the CLI exits quietly with 141
    except OSError as error:  # the output cannot take more lines (a full disk, ...)
        raise MuxError(f"cannot write {'<stdout>' if args.output == '-' else args.output} "
                       f"after {summary.records} lines: {error.strerror or error}") from None
    finally:
        progress.stop()
        if log_file is not None:
            log_file.close()
    stats = [client.stats for client in runtime.clients.values()]
    requests = sum(s.requests for s in stats)
    retries = sum(s.retries for s in stats)
    limited = sum(s.rate_limited for s in stats)
    if not args.no_progress:
        line = (f"{'interrupted' if summary.interrupted else 'done'}: {summary.records} records "
                f"in {summary.elapsed:.1f}s, {summary.failed} failed")
        if summary.missing:
            line += f", {summary.missing} answered with members missing"
        if summary.partial:
            line += f", {summary.partial} with members' samples failed"
        line += f"; {requests} requests, {retries} retries, {limited} rate-limited"
        if runtime.cache_hits:
            line += f", {runtime.cache_hits} samples from the cache"
        if executor.scored:
            line += (f"; accuracy {executor.correct / executor.scored:.1%} "
                     f"({executor.correct}/{executor.scored} scored)")
        if log is not None:
            line += f"; {log.count} samples logged to {args.log_samples}"
        print(line, file=sys.stderr, flush=True)
    if summary.interrupted:
        return 130
    if summary.failed:
        return 1
    if args.strict and summary.incomplete:
        if args.no_progress:  # the final line did not say it
            print(f"--strict: {summary.incomplete} records were answered without every sample "
                  "they asked for (see 'missing' and 'partial' in the output)",
                  file=sys.stderr, flush=True)
        return 1
    return 0
