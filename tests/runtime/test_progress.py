"""Progress lines on a non-terminal stream."""
from __future__ import annotations

import asyncio
import io

from muxlang.runtime.progress import Progress


def test_plain_lines_keep_coming_while_no_record_finishes():
    stream = io.StringIO()
    progress = Progress(10, stream=stream, plain_every=0.05)

    async def stalled_run() -> None:
        beat = asyncio.ensure_future(progress.heartbeat())
        await asyncio.sleep(0.3)  # nothing finishes: a server hangs
        beat.cancel()

    asyncio.run(stalled_run())
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("progress: 0/10 records") for line in lines)
    assert "0 errors" in lines[0] and "elapsed" in lines[0]


def test_no_heartbeat_when_progress_is_off():
    stream = io.StringIO()
    progress = Progress(10, stream=stream, plain_every=0.01, enabled=False)

    async def run() -> None:
        await asyncio.wait_for(progress.heartbeat(), timeout=1)  # returns at once

    asyncio.run(run())
    assert stream.getvalue() == ""


def test_finished_records_print_at_most_one_line_per_period():
    stream = io.StringIO()
    progress = Progress(3, stream=stream, plain_every=3600)
    for failed in (False, True, False):
        progress.advance(failed)
    assert stream.getvalue() == ""  # the period has not passed
    assert progress.line().startswith("progress: 3/3 records") and "1 error," in progress.line()


def test_update_sets_done_errors_and_the_detail_collect_shows():
    stream = io.StringIO()
    progress = Progress(90, stream=stream, plain_every=0, label="samples")
    progress.update(30, errors=2, detail="1,200 in + 3,400 out tokens, $0.0123")
    line = stream.getvalue().strip()
    assert line.startswith("progress: 30/90 samples")
    assert "2 errors" in line and "1,200 in + 3,400 out tokens, $0.0123" in line
    assert "ETA" in line
