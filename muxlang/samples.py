"""Samples and their keys: what one model answered, and what makes two requests the same request.

Below both the runtime (which draws samples) and the store (which keeps them), so that both speak of
a sample with the same classes and hash a prompt the same way; ``muxlang.store`` never imports the
runtime.

A *sample* is one model response to one prompt: the k samples of a pool member are k samples with
indices 0..k-1. A sample is identified by ``(backend, model id, sampling parameters, prompt hash,
sample index)``; the first four form a :class:`SampleKey`, whose ``hash`` (SHA-256 of their
canonical JSON) is what the store's ``samples`` table is unique on, together with the index
(a :class:`SampleId` is the pair).

- ``backend`` is the backend's *name* in the spec (not its URL), so overriding a URL on the command
  line keeps the cache; recorded imports use the backend name ``"import"``.
- parameters are ``ir.Model.sampling_params()`` in canonical JSON: sorted keys, no spaces, numbers
  normalised (``1`` and ``1.0`` are one temperature), ``None`` kept (an unset parameter differs
  from a set one).
- the prompt hash is SHA-256 of the canonical JSON of the chat messages actually sent (see
  ``muxlang.prompts.render`` and :func:`prompt_hash`). For recorded (replayed) outputs, whose exact
  prompt is unknown, it is the item's input hash (:func:`record_input_hash`).

The runtime talks to a cache through ``SampleCache`` (async ``get`` / ``put`` by ``SampleId``).
``NullCache`` stores nothing (the runtime's default), ``MemoryCache`` keeps one process's samples;
the store plugs in its own (``muxlang.store.cache.StoreCache``).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from muxlang.ir import Model


# ------------------------------------------------------------------------------------------------
# Canonical forms and hashes
def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
            return int(number)
        return number
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, compact, numbers normalised (1.0 -> 1), UTF-8 kept."""
    if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
        return json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)  # fast path
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    # surrogatepass: a lone surrogate (a record may hold one) hashes instead of failing; every
    # other string hashes exactly as before
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def prompt_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """Hash of the chat messages sent to the model (role and content of each, in order)."""
    return sha256(canonical_json([{"role": m["role"], "content": m["content"]} for m in messages]))


def record_input_hash(record: Mapping[str, Any], gold_field: str | None) -> str:
    """Hash of a dataset record without its gold answer: what a recorded output answered.

    Recorded outputs (``muxlang import``) are stored under this as their prompt hash, so the same
    question imported twice (under any dataset name) shares its samples, and correcting a gold
    answer does not orphan them.
    """
    visible = {k: v for k, v in record.items() if k != gold_field}
    return sha256("record:" + canonical_json(visible))


# ------------------------------------------------------------------------------------------------
# Keys
@dataclass(frozen=True)
class SampleKey:
    """Everything that determines a sample except its index."""

    backend: str  # backend name as the spec declares it
    model: str  # the model id the server knows
    params: str  # canonical JSON of the sampling parameters
    prompt_hash: str

    @property
    def hash(self) -> str:
        return sha256(canonical_json([self.backend, self.model, self.params, self.prompt_hash]))

    @classmethod
    def make(cls, backend: str, model: str, params: Mapping[str, Any],
             prompt_hash: str) -> "SampleKey":
        return cls(backend, model, canonical_json(dict(params)), prompt_hash)

    @classmethod
    def for_model(cls, model: "Model", messages: Sequence[Mapping[str, Any]]) -> "SampleKey":
        """The key of ``model`` answering ``messages``."""
        return cls.make(model.backend.name, model.id, model.sampling_params(), prompt_hash(messages))


class SampleId(NamedTuple):
    """One sample: the key of its request and its index (0..k-1)."""

    key: SampleKey
    index: int


def sample_keys(backend: str, model_id: str, params: Mapping[str, Any],
                messages: Sequence[Mapping[str, Any]], indices: Sequence[int]) -> list[SampleId]:
    """The ids of samples ``indices`` of one model answering ``messages``."""
    key = SampleKey.make(backend, model_id, params, prompt_hash(messages))
    return [SampleId(key, i) for i in indices]


# ------------------------------------------------------------------------------------------------
# Samples
MAX_REPORTED_COST = 1000.0  # USD: no one reply costs more; a larger figure is a server's mistake


def checked_cost(value: Any) -> float | None:
    """A cost a server or a file reported for a reply or a sample, as kept: USD as a float, or
    None when there is none or it is not a cost (not a number, negative, NaN, infinite, or above
    ``MAX_REPORTED_COST``). A header's text is read as a number; a bool is not one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    try:
        cost = float(value)
    except OverflowError:  # an integer past float's range
        return None
    return cost if math.isfinite(cost) and 0 <= cost <= MAX_REPORTED_COST else None


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
    cost: float | None = None  # USD a gateway reported for it (x-litellm-response-cost), if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def spent(self, price_input: float, price_output: float) -> float:
        """USD this reply cost: what the gateway reported, else the prices (USD per token)
        times its tokens; a reported 0 does not override a price (``StoredVotes.cost_source``
        applies the same rule to stored samples)."""
        priced = (self.input_tokens or 0) * price_input + (self.output_tokens or 0) * price_output
        if self.cost is not None and (self.cost > 0 or not (price_input or price_output)):
            return self.cost
        return priced


@dataclass
class SampleFailure:
    """A sample that could not be drawn: a message fit to print (secrets scrubbed)."""

    index: int
    error: str
    status: int | None = None  # HTTP status when there was one
    attempts: int = 0


# ------------------------------------------------------------------------------------------------
# Caches
@runtime_checkable
class SampleCache(Protocol):
    """Async get/put of samples by id. ``get`` returns one entry per id, None when absent."""

    async def get(self, ids: Sequence[SampleId]) -> list[Sample | None]: ...

    async def put(self, items: Sequence[tuple[SampleId, Sample]],
                  messages: Sequence[Mapping[str, str]] | None = None) -> None: ...


class NullCache:
    """Stores nothing: every sample is drawn from its backend."""

    async def get(self, ids: Sequence[SampleId]) -> list[Sample | None]:
        return [None] * len(ids)

    async def put(self, items: Sequence[tuple[SampleId, Sample]],
                  messages: Sequence[Mapping[str, str]] | None = None) -> None:
        return None


@dataclass
class MemoryCache:
    """A dict-backed cache (tests, and one process's reuse)."""

    data: dict[SampleId, Sample] = field(default_factory=dict)
    gets: int = 0
    hits: int = 0

    async def get(self, ids: Sequence[SampleId]) -> list[Sample | None]:
        out: list[Sample | None] = []
        for sample_id in ids:
            self.gets += 1
            sample = self.data.get(sample_id)
            if sample is not None:
                self.hits += 1
                out.append(Sample(**{**sample.to_dict(), "cached": True}))
            else:
                out.append(None)
        return out

    async def put(self, items: Sequence[tuple[SampleId, Sample]],
                  messages: Sequence[Mapping[str, str]] | None = None) -> None:
        for sample_id, sample in items:
            self.data[sample_id] = sample
