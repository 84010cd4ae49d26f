"""Samples, their cache keys, and the pluggable sample cache.

A *sample* is one model response to one prompt: the k samples of a pool member are k samples with
indices 0..k-1. Its cache key holds everything that changes what the server returns (backend,
model id, every sampling parameter, the prompt's hash) plus the sample index, so k samples never
collapse into one cached answer.

The runtime talks to a cache through ``SampleCache`` (async ``get`` / ``put`` of lists). The
default, ``NullCache``, stores nothing; the sample store plugs in its own implementation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

Messages = list[dict[str, str]]


@dataclass
class Sample:
    """One successful response."""

    index: int  # sample index within the pool member, 0..k-1
    text: str  # the raw response text ("" when the server returned no content)
    finish_reason: str | None = None
    input_tokens: int | None = None  # None when the server did not report usage
    output_tokens: int | None = None
    latency: float = 0.0  # seconds of the request that produced it
    seed: int | None = None  # the seed sent with the request that produced it
    cached: bool = False  # served from the cache, not from the backend

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampleFailure:
    """A sample that could not be drawn: a message fit to print (secrets scrubbed)."""

    index: int
    error: str
    status: int | None = None  # HTTP status when there was one
    attempts: int = 0


SampleResult = "Sample | SampleFailure"


def prompt_hash(messages: Messages) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SampleKey:
    """Where one sample lives in a cache: (backend, model id, sampling params, prompt hash, index)."""

    backend: str  # backend name as the spec declares it
    model: str  # the model id the server knows
    params: tuple[tuple[str, Any], ...]  # every sampling parameter, sorted by name
    prompt_hash: str  # sha256 of the canonical JSON of the chat messages
    index: int  # sample index

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "params": self.params_dict,
                "prompt_hash": self.prompt_hash, "index": self.index}

    def digest(self) -> str:
        """A stable string id of the key (for stores that want one column)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_keys(backend: str, model_id: str, params: dict[str, Any], messages: Messages,
                indices: Sequence[int]) -> list[SampleKey]:
    frozen = tuple(sorted(params.items()))
    digest = prompt_hash(messages)
    return [SampleKey(backend, model_id, frozen, digest, i) for i in indices]


@runtime_checkable
class SampleCache(Protocol):
    """Async get/put of samples by key. ``get`` returns one entry per key, None when absent."""

    async def get(self, keys: Sequence[SampleKey]) -> list[Sample | None]: ...

    async def put(self, items: Sequence[tuple[SampleKey, Sample]],
                  messages: Messages | None = None) -> None: ...


class NullCache:
    """Stores nothing: every sample is drawn from its backend."""

    async def get(self, keys: Sequence[SampleKey]) -> list[Sample | None]:
        return [None] * len(keys)

    async def put(self, items: Sequence[tuple[SampleKey, Sample]],
                  messages: Messages | None = None) -> None:
        return None


@dataclass
class MemoryCache:
    """A dict-backed cache (tests, and one process's reuse)."""

    data: dict[SampleKey, Sample] = field(default_factory=dict)
    gets: int = 0
    hits: int = 0

    async def get(self, keys: Sequence[SampleKey]) -> list[Sample | None]:
        out: list[Sample | None] = []
        for key in keys:
            self.gets += 1
            sample = self.data.get(key)
            if sample is not None:
                self.hits += 1
                copy = Sample(**{**sample.to_dict(), "cached": True})
                out.append(copy)
            else:
                out.append(None)
        return out

    async def put(self, items: Sequence[tuple[SampleKey, Sample]],
                  messages: Messages | None = None) -> None:
        for key, sample in items:
            self.data[key] = sample
