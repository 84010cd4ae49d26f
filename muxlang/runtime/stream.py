"""Streaming records through a ``PlanExecutor``: bounded in flight, output in input order.

Input lines are read lazily; at most ``in_flight`` records are between "read" and "written" at any
time, so memory stays flat however long the input. Each result is written as soon as every earlier
line has been written. A bad line (not JSON, not an object, a field the template needs is missing)
gets an error line of its own and a message with ``file:line``; the rest of the run goes on.
"""
from __future__ import annotations

import asyncio
import codecs
import json
import re
import threading
from dataclasses import dataclass
from typing import IO, Any, AsyncIterator, Callable, Iterator

from muxlang.errors import MuxError
from muxlang.jsonl import dumps_line, parse_line
from muxlang.runtime.executor import PlanExecutor, RecordResult
from muxlang.runtime.secrets import clip, scrub

MAX_REPORTED = 20  # record errors printed one by one; the rest are only counted


@dataclass
class RunSummary:
    records: int = 0  # output lines written
    failed: int = 0  # records with an error (bad input included)
    bad_input: int = 0
    missing: int = 0  # records answered with some member missing (every request failed)
    partial: int = 0  # records answered with a member some of whose samples failed
    incomplete: int = 0  # records answered with either: not every sample they asked for
    interrupted: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted


# ``backend 'local', model 'a' (id-a): `` at the start of a request's failure
_REQUEST_PREFIX = re.compile(r"^backend '[^']*', model '[^']*' \([^)]*\): ")
MAX_REASON = 160  # characters of each distinct reason in a record's line on the terminal


def short_reason(result: RecordResult) -> str:
    """A record's error for the terminal: short, each distinct member failure said once.

    The output line keeps every member's full reason (``failures``); on the terminal, a record
    whose members all failed the same way (a server down, a key refused) says so once, without
    the backend and model each message repeats, so twenty records stay twenty short lines.
    """
    error = result.error or ""
    mux = result.result
    failures = dict(mux.failures) if mux is not None else {}
    if not failures or "every pool member failed" not in error:
        return clip(error, 2 * MAX_REASON)
    grouped: dict[str, list[str]] = {}
    for member, text in failures.items():
        grouped.setdefault(_REQUEST_PREFIX.sub("", text), []).append(member)
    parts = [f"{', '.join(members)}: {clip(text, MAX_REASON)}" for text, members in grouped.items()]
    return clip(f"mux '{mux.mux}': every pool member failed: " + "; ".join(parts), 3 * MAX_REASON)


def _batches(stream: IO[str], chunk: int) -> Iterator[list[str]]:
    """Lists of lines (each ending in its newline but the last of the input) as soon as they come.

    When the text stream has bytes beneath it (a file, stdin), it reads whatever is available in
    one system call (``read1``) and splits that into lines, so a batch never waits for data that
    is not there yet: records piped in one by one (a producer that is still running, a terminal)
    are run as they arrive, not when some batch size fills up or the pipe closes. A plain text
    stream (``io.StringIO``) cannot block, and is read ``chunk`` lines at a time. Lines are split
    on ``\n`` only: a JSON string may hold U+2028 and friends, which ``str.splitlines`` would cut.
    Must be called before anything else reads the stream.
    """
    buffer = getattr(stream, "buffer", None)
    read1 = getattr(buffer, "read1", None)
    if read1 is None:
        while True:
            lines = []
            for _ in range(chunk):
                line = stream.readline()
                if not line:
                    break
                lines.append(line)
            if lines:
                yield lines
            if len(lines) < chunk:
                return
    # a byte that is not UTF-8 stays visible (as a lone surrogate) for muxlang.jsonl.parse_line
    # to refuse with its line, as every other reader of input files does
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    partial = ""
    while True:
        data = read1(1 << 16)
        text = partial + decoder.decode(data, final=not data)
        if not data:
            if text:
                yield [text]
            return
        lines = text.split("\n")
        partial = lines.pop()
        if lines:
            yield [line + "\n" for line in lines]


async def read_lines(stream: IO[str], chunk: int = 512) -> AsyncIterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of ``stream``.

    A daemon thread reads batches of lines (``_batches``) into a small queue (back-pressure: it
    never reads far ahead of the executor), so a blocking stdin never blocks the event loop, and
    an interrupted run never waits for a read that may not come.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    stop = threading.Event()

    def reader() -> None:
        try:
            for lines in _batches(stream, chunk):
                asyncio.run_coroutine_threadsafe(queue.put(lines), loop).result()
                if stop.is_set():
                    return
            asyncio.run_coroutine_threadsafe(queue.put([]), loop).result()
        except BaseException as error:  # noqa: BLE001 - hand any read error to the loop
            try:
                asyncio.run_coroutine_threadsafe(queue.put(error), loop).result()
            except BaseException:  # noqa: BLE001 - the loop is gone
                pass

    thread = threading.Thread(target=reader, name="muxlang-input", daemon=True)
    thread.start()
    number = 0
    try:
        while True:
            lines = await queue.get()
            if isinstance(lines, BaseException):
                raise lines
            if not lines:
                return
            for line in lines:
                number += 1
                if line.strip():
                    yield number, line
    finally:
        stop.set()
        while not queue.empty():  # unblock the reader if it is waiting for room
            queue.get_nowait()


def _error_line(message: str) -> dict[str, Any]:
    return RecordResult(record=None, error=message).output()


async def run_records(executor: PlanExecutor, lines: AsyncIterator[tuple[int, str]],
                      write: Callable[[str], None], *, source: str = "<input>",
                      in_flight: int = 64, report: Callable[[str], None] | None = None,
                      on_done: Callable[[RecordResult | None, bool], None] | None = None,
                      summary: RunSummary | None = None) -> RunSummary:
    """Run every line through ``executor``; ``write`` gets each output line (with its newline).

    ``report`` gets one message per bad record (file:line: ...); ``on_done(result, failed)`` is
    called for progress as each record finishes. Cancelling this coroutine stops the run: lines
    already written stay written. When ``write`` fails (a closed pipe such as ``| head``, a full
    disk) the run stops and its ``OSError`` is raised here: no later line could be written, and
    waiting for the lost line's turn would hang the run.
    """
    summary = summary or RunSummary()
    loop = asyncio.get_running_loop()
    started = loop.time()
    slots = asyncio.Semaphore(max(1, in_flight))
    ready: dict[int, str] = {}
    state = {"next": 0, "reported": 0}
    tasks: set[asyncio.Task] = set()
    runner = asyncio.current_task()
    write_error: list[OSError] = []

    def say(message: str) -> None:
        if report is None:
            return
        state["reported"] += 1
        if state["reported"] <= MAX_REPORTED:
            report(scrub(message))
        elif state["reported"] == MAX_REPORTED + 1:
            report("... more record errors are not shown; see the output's \"error\" fields")

    def flush() -> None:
        while state["next"] in ready:
            write(ready.pop(state["next"]))
            state["next"] += 1
            summary.records += 1
            slots.release()

    async def process(seq: int, number: int, text: str) -> None:
        result: RecordResult | None = None
        try:
            try:
                record = parse_line(text)
            except ValueError as error:
                message = f"{source}:{number}: {error}"
                out = _error_line(message)
                summary.bad_input += 1
                summary.failed += 1
                say(message)
            else:
                result = await executor.run_record(record)
                out = result.output()
                if result.failed:
                    summary.failed += 1
                    if result.bad_input:
                        summary.bad_input += 1
                        out["error"] = f"{source}:{number}: {result.error}"
                    say(f"{source}:{number}: {short_reason(result)}")
                else:
                    summary.missing += bool(out.get("missing"))
                    summary.partial += bool(out.get("partial"))
                    summary.incomplete += bool(out.get("missing") or out.get("partial"))
            ready[seq] = dumps_line(out)  # a lone surrogate in a reply: escaped
        except Exception as error:  # noqa: BLE001 - one record's bug must not end the run
            message = clip(f"{source}:{number}: internal error: {type(error).__name__}: "
                           f"{error}", 1000)
            ready[seq] = json.dumps(_error_line(message)) + "\n"
            summary.failed += 1
            say(message)
        try:
            flush()
        except OSError as error:
            if not write_error:
                write_error.append(error)
                if runner is not None:
                    runner.cancel()  # wakes the reading loop wherever it waits
            return
        if on_done is not None:
            on_done(result, result is None or result.failed)

    seq = 0
    read_error: BaseException | None = None
    try:
        try:
            async for number, text in lines:
                await slots.acquire()
                task = asyncio.create_task(process(seq, number, text))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
        except (OSError, UnicodeError, ValueError) as error:
            read_error = error  # finish what was read, then report
        while tasks:
            await asyncio.gather(*list(tasks))
        if read_error is not None:
            raise MuxError(f"cannot read {source} after line {seq}: {read_error}")
    except asyncio.CancelledError:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*list(tasks), return_exceptions=True)
        if write_error:
            raise write_error[0] from None
        summary.interrupted = True
        flush()
    finally:
        summary.elapsed = loop.time() - started
    return summary
