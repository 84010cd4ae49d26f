"""Helpers for ``muxlang serve`` tests: muxlang's server on 127.0.0.1 (a free port) on an event
loop of its own in a background thread, as a separate process would be, and an ``openai`` client
for it."""
from __future__ import annotations

import asyncio
import hashlib
import threading
from contextlib import contextmanager
from typing import Any, Iterator


def varied(model: str, prompt: str, seed: int) -> str:
    """Answers 0..3 depending on model, prompt and seed: members disagree, ties happen."""
    digest = hashlib.sha256(f"{model}|{prompt}|{seed}".encode()).digest()
    spread = {"id-a": 2, "id-b": 3, "id-c": 4}.get(model, 3)
    return f"Reasoning about it, {model} says:\n#### {digest[0] % spread}"


class ServeThread:
    """A ``MuxServer`` listening on 127.0.0.1 (a free port) from a thread with its own loop."""

    def __init__(self, server: Any):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="muxlang-serve",
                                       daemon=True)

    def __enter__(self) -> "ServeThread":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(30)
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop (to look at its state) and return what it gives."""
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def __exit__(self, *exc: Any) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


@contextmanager
def serving(spec: Any, session: Any = None, muxes: Any = None, **options: Any
            ) -> Iterator[ServeThread]:
    from muxlang.serve import MuxServer

    with ServeThread(MuxServer(spec, session, muxes, **options)) as running:
        yield running


def client(running: ServeThread, key: str = "not-checked", **options: Any):
    import openai

    return openai.OpenAI(base_url=running.url + "/v1", api_key=key, max_retries=0, timeout=60,
                         **options)
