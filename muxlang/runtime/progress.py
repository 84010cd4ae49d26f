"""Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import IO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """done/total, rate, ETA, errors, and a free detail (collect: tokens and money so far).

    ``plain_every`` seconds between plain lines. ``run`` counts records with :meth:`advance`;
    ``collect`` sets samples done and its spend with :meth:`update`.
    """

    def __init__(self, total: int | None, *, stream: IO[str] | None = None,
                 enabled: bool = True, plain_every: float = 10.0, label: str = "records"):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.plain_every = plain_every
        self.label = label
        self.done = 0
        self.errors = 0
        self.detail = ""
        self.start = time.monotonic()
        self._last = self.start
        self._rich = None
        self._task = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.console import Console
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

                self._rich = RichProgress(
                    TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), TextColumn("[red]{task.fields[errors]}"),
                    TextColumn("{task.fields[detail]}", markup=False),
                    console=Console(file=self.stream), transient=False)
                self._rich.start()
                self._task = self._rich.add_task(label, total=total, rate="", errors="",
                                                 detail="")
            except Exception:  # noqa: BLE001 - progress must never break a run
                self._rich = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.done}/{self.total if self.total is not None else '?'} {self.label}",
                 f"{rate:.1f}/s"]
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        if self.detail:
            parts.append(self.detail)
        parts.append(f"elapsed {_duration(elapsed)}")
        return "progress: " + ", ".join(parts)

    def advance(self, failed: bool = False) -> None:
        """One more unit done (a record, for ``run``)."""
        self.update(self.done + 1, errors=self.errors + int(failed))

    def update(self, done: int, *, errors: int | None = None, detail: str | None = None) -> None:
        """Set how many units are done (and the error count, and the detail text)."""
        self.done = done
        if errors is not None:
            self.errors = errors
        if detail is not None:
            self.detail = detail
        if not self.enabled:
            return
        if self._rich is not None:
            elapsed = time.monotonic() - self.start
            rate = f"{self.done / elapsed:.1f}/s" if elapsed > 0 else ""
            errors_text = f"{self.errors} errors" if self.errors else ""
            self._rich.update(self._task, completed=self.done, rate=rate, errors=errors_text,
                              detail=self.detail)
            return
        self._plain_line_when_due()

    async def heartbeat(self) -> None:
        """Plain lines also while no record finishes (run it as a task; cancel it at the end).

        A run stalled on a hanging or retrying server would otherwise print nothing for as long
        as the stall lasts, and a log reader cannot tell a slow run from a dead one. The rich bar
        refreshes itself and needs no beat.
        """
        if not self.enabled or self._rich is not None:
            return
        while True:
            await asyncio.sleep(self.plain_every)
            self._plain_line_when_due()

    def _plain_line_when_due(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.plain_every:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
