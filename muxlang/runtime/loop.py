"""Running the executor's event loop: uvloop when it is installed, asyncio's own loop otherwise.

While it runs, objects that exist before the run (modules, the spec, the plan) are frozen out of
the cyclic garbage collector and its first generation is collected less often: a run allocates
many short-lived objects per request, and scanning the long-lived ones again and again costs CPU
the client needs to keep servers busy.
"""
from __future__ import annotations

import asyncio
import gc
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if hasattr(asyncio, "Runner"):  # Python 3.11+
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    uvloop.install()
    return asyncio.run(coro)


def run(coro: Coroutine[Any, Any, T]) -> T:
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 20_000), *thresholds[1:])
    try:
        return _run(coro)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
