"""The store as the runtime's sample cache (``muxlang.runtime.samples.SampleCache``).

``Runtime(..., cache=StoreCache(store, run_id))``: ``get`` answers from stored successful samples,
``put`` stores new ones as they arrive, one transaction per call (the k samples of one model for
one prompt), idempotently. Database work runs in a worker thread so the event loop keeps serving
HTTP while SQLite waits for a lock.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from muxlang.store.core import NewSample, Store
from muxlang.store.keys import SampleKey


def convert_key(key: Any) -> SampleKey:
    """The runtime's key (with index) → the store's ``SampleKey`` (without)."""
    params = key.params_dict if hasattr(key, "params_dict") else dict(key.params)
    return SampleKey.make(key.backend, key.model, params, key.prompt_hash)


class StoreCache:
    def __init__(self, store: Store, run_id: int | None = None,
                 on_put: Callable[[Sequence[Any]], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.on_put = on_put  # called with the runtime Samples just stored
        self.hits = 0
        self.stored = 0

    async def get(self, keys: Sequence[Any]) -> list[Any]:
        return await asyncio.to_thread(self._get, list(keys))

    def _get(self, keys: list[Any]) -> list[Any]:
        from muxlang.runtime.samples import Sample

        converted = [convert_key(k) for k in keys]
        found = self.store.get_samples_many(converted)
        out = []
        for key, mine in zip(keys, converted):
            hit = next((s for s in found[mine.hash] if s.index == key.index and s.ok), None)
            if hit is None:
                out.append(None)
                continue
            self.hits += 1
            out.append(Sample(index=hit.index, text=hit.text or "", finish_reason=hit.finish_reason,
                              input_tokens=hit.tokens_in, output_tokens=hit.tokens_out,
                              latency=hit.latency or 0.0, cached=True))
        return out

    async def put(self, items: Sequence[tuple[Any, Any]], messages: Any = None) -> None:
        await asyncio.to_thread(self._put, list(items))

    def _put(self, items: list[tuple[Any, Any]]) -> None:
        rows = [NewSample(convert_key(key), key.index, sample.text, sample.input_tokens,
                          sample.output_tokens, sample.latency, sample.finish_reason, None,
                          self.run_id) for key, sample in items]
        self.stored += self.store.put_samples(rows)
        if self.on_put is not None:
            self.on_put([sample for _, sample in items])
