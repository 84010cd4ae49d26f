"""The store as the runtime's sample cache (``muxlang.samples.SampleCache``).

``Runtime(..., cache=StoreCache(store, run_id))``: ``get`` answers from stored successful samples,
``put`` stores new ones as they arrive, with the cost a gateway reported for each, one
transaction per call (the k samples of one model for one prompt), idempotently. Database work
runs in a worker thread so the event loop keeps serving HTTP while SQLite waits for a lock.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from muxlang.samples import Sample, SampleId
from muxlang.store.core import NewSample, Store


class StoreCache:
    def __init__(self, store: Store, run_id: int | None = None,
                 on_put: Callable[[Sequence[Any]], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.on_put = on_put  # called with the Samples just stored
        self.hits = 0
        self.stored = 0

    async def get(self, ids: Sequence[SampleId]) -> list[Sample | None]:
        return await asyncio.to_thread(self._get, list(ids))

    def _get(self, ids: list[SampleId]) -> list[Sample | None]:
        found = self.store.get_samples_many([key for key, _ in ids])
        out: list[Sample | None] = []
        for key, index in ids:
            hit = next((s for s in found[key.hash] if s.index == index and s.ok), None)
            if hit is None:
                out.append(None)
                continue
            self.hits += 1
            out.append(Sample(index=hit.index, text=hit.text or "", finish_reason=hit.finish_reason,
                              input_tokens=hit.tokens_in, output_tokens=hit.tokens_out,
                              latency=hit.latency or 0.0, cached=True, cost=hit.cost))
        return out

    async def put(self, items: Sequence[tuple[SampleId, Sample]], messages: Any = None) -> None:
        await asyncio.to_thread(self._put, list(items))

    def _put(self, items: list[tuple[SampleId, Sample]]) -> None:
        rows = [NewSample(sample_id.key, sample_id.index, sample.text, sample.input_tokens,
                          sample.output_tokens, sample.latency, sample.finish_reason, None,
                          self.run_id, sample.cost) for sample_id, sample in items]
        self.stored += self.store.put_samples(rows)
        if self.on_put is not None:
            self.on_put([sample for _, sample in items])
