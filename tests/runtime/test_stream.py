"""Streaming records: ordered output, bounded in-flight records, cancellation (no servers)."""
from __future__ import annotations

import asyncio
import io
import json
import random

from muxlang.runtime.executor import MuxResult, RecordResult
from muxlang.runtime.stream import read_lines, run_records


class FakeExecutor:
    """Answers each record after a random delay; tracks how many are in progress at once."""

    def __init__(self, seed: int = 0, max_delay: float = 0.003):
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.active = 0
        self.peak = 0

    async def run_record(self, record):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.rng.uniform(0, self.max_delay))
            return RecordResult(record=record, result=MuxResult(mux="m", answer=str(record["n"]),
                                                                model="x", confidence=1.0))
        finally:
            self.active -= 1


async def lines_of(count: int):
    for i in range(count):
        yield i + 1, json.dumps({"id": i, "n": i})


def test_output_is_in_input_order_and_in_flight_is_bounded():
    executor = FakeExecutor()
    out: list[str] = []
    summary = asyncio.run(run_records(executor, lines_of(2000), out.append, in_flight=32))
    assert summary.records == 2000 and summary.failed == 0
    assert [json.loads(line)["id"] for line in out] == list(range(2000))
    assert executor.peak <= 32


def test_a_slow_record_holds_back_later_lines_but_never_more_than_in_flight():
    class Slow(FakeExecutor):
        async def run_record(self, record):
            if record["n"] == 0:
                await asyncio.sleep(0.2)
            return await super().run_record(record)

    executor = Slow(max_delay=0)
    written_at_peak = []
    out: list[str] = []

    def write(line):
        out.append(line)
        written_at_peak.append(executor.peak)

    asyncio.run(run_records(executor, lines_of(100_000 // 100), write, in_flight=8))
    assert [json.loads(line)["id"] for line in out] == list(range(1000))
    assert executor.peak <= 8


def test_cancelling_keeps_the_lines_already_written():
    executor = FakeExecutor(max_delay=0.002)
    out: list[str] = []

    async def go():
        task = asyncio.create_task(run_records(executor, lines_of(100_000), out.append,
                                               in_flight=16))
        while len(out) < 50:
            await asyncio.sleep(0.005)
        task.cancel()
        return await task

    summary = asyncio.run(go())
    assert summary.interrupted
    ids = [json.loads(line)["id"] for line in out]
    assert ids == list(range(len(ids))) and 50 <= len(ids) < 100_000
    assert summary.records == len(ids)


def test_read_lines_numbers_lines_and_skips_blank_ones():
    async def go():
        stream = io.StringIO('{"a": 1}\n\n  \n{"b": 2}\n{"c": 3}')
        return [item async for item in read_lines(stream, chunk=2)]

    assert asyncio.run(go()) == [(1, '{"a": 1}\n'), (4, '{"b": 2}\n'), (5, '{"c": 3}')]


def test_a_record_that_raises_gets_an_error_line_and_the_rest_runs():
    class Buggy(FakeExecutor):
        async def run_record(self, record):
            if record["n"] == 3:
                raise RuntimeError("boom")
            return await super().run_record(record)

    out: list[str] = []
    messages: list[str] = []
    summary = asyncio.run(run_records(Buggy(), lines_of(10), out.append, source="in.jsonl",
                                      in_flight=4, report=messages.append))
    lines = [json.loads(line) for line in out]
    assert len(lines) == 10 and summary.failed == 1
    assert "in.jsonl:4: internal error" in lines[3]["error"]
    assert messages == [lines[3]["error"]]
