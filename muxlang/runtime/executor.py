"""The executor: runs a compiled execution plan (``muxlang.compiler.build_plan``) for records.

Two layers, usable separately:

- ``Runtime`` — the request layer: one ``BackendClient`` per spec backend (session, limits,
  retries, n batching) and the ``SampleCache``. ``await runtime.sample(model, messages, indices)``
  returns one ``Sample`` or ``SampleFailure`` per index, from the cache where it can.
- ``PlanExecutor`` — the record layer: walks the plan template in topological generations for one
  record (render → generate → extract → vote → select, gates for cascades), batching all of a
  member's samples into one ``Runtime.sample`` call, and returns a ``RecordResult`` whose
  ``output()`` is the JSON line ``muxlang run`` writes.

``muxlang.runtime.stream.run_records`` drives a ``PlanExecutor`` over a stream of input lines with
bounded in-flight records and ordered output.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import networkx as nx

from muxlang import ir, semantics
from muxlang.errors import MuxError
from muxlang.runtime.backends import (BackendClient, BackendSettings, RetryPolicy, make_backend,
                                      no_answer)
from muxlang.prompts import Messages, RecordError, render
from muxlang.runtime.rounds import Rounds
from muxlang.runtime.secrets import scrub
from muxlang.samples import NullCache, Sample, SampleCache, SampleFailure, sample_keys


# ------------------------------------------------------------------------------------------------
# The request layer
class Runtime:
    """Backends + cache. Use as ``async with Runtime(...) as rt``."""

    def __init__(self, backends: Iterable[ir.Backend], *, urls: Mapping[str, str] | None = None,
                 concurrency: int | None = None, rate: float | None = None,
                 cache: SampleCache | None = None, policy: RetryPolicy | None = None,
                 environ: Mapping[str, str] | None = None, check: bool = True,
                 clients: Mapping[str, BackendClient] | None = None):
        """``clients``: ready-made clients by backend name (e.g. a replay backend served from the
        store); they are used as given, for every other backend a client is made from the spec.
        """
        urls = dict(urls or {})
        backends = list(backends.values()) if isinstance(backends, dict) else list(backends)
        known = {b.name for b in backends}
        for name in urls:
            if name not in known:
                raise MuxError(f"a URL is given for backend '{name}', which the spec does not "
                               "declare"
                               + (f" (backends: {', '.join(sorted(known))})" if known else ""))
        self.clients: dict[str, BackendClient] = dict(clients or {})
        for backend in backends:
            if backend.name in self.clients:
                continue
            settings = BackendSettings.resolve(backend, url=urls.get(backend.name),
                                               concurrency=concurrency, rate=rate,
                                               environ=dict(environ) if environ else None)
            if check:
                settings.check(backend.api_key_env)
            self.clients[backend.name] = make_backend(settings, policy=policy)
        self.cache: SampleCache = cache if cache is not None else NullCache()
        self.cache_hits = 0
        self.rounds = Rounds()  # how often adaptive split rounds were needed (round sizes)

    @classmethod
    def for_runnable(cls, runnable: ir.Runnable, **kwargs: Any) -> "Runtime":
        return cls(backends_of(runnable), **kwargs)

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()

    async def __aenter__(self) -> "Runtime":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def total_concurrency(self) -> int:
        return sum(c.settings.concurrency for c in self.clients.values()) or 1

    def client(self, model: ir.Model) -> BackendClient:
        try:
            return self.clients[model.backend.name]
        except KeyError:
            raise MuxError(f"model '{model.name}' uses backend '{model.backend.name}', which "
                           f"this runtime was not given") from None

    async def sample(self, model: ir.Model, messages: Messages,
                     indices: Sequence[int]) -> list[Sample | SampleFailure]:
        """Samples ``indices`` of ``model`` for ``messages``: cached ones first, the rest drawn."""
        client = self.client(model)
        if isinstance(self.cache, NullCache):
            return await client.generate(model, messages, indices)
        keys = sample_keys(model.backend.name, model.id, model.sampling_params(), messages,
                           indices)
        cached = await self.cache.get(keys)
        results: dict[int, Sample | SampleFailure] = {}
        todo = []
        for index, hit in zip(indices, cached):
            if hit is not None:
                hit.index = index
                hit.cached = True
                results[index] = hit
                self.cache_hits += 1
            else:
                todo.append(index)
        if todo:
            fresh = await client.generate(model, messages, todo)
            store = []
            key_of = dict(zip(indices, keys))
            for index, result in zip(todo, fresh):
                results[index] = result
                if isinstance(result, Sample):
                    store.append((key_of[index], result))
            if store:
                await self.cache.put(store, messages)
        return [results[i] for i in indices]


def backends_of(runnable: ir.Runnable) -> list[ir.Backend]:
    """Every backend a mux or cascade calls, in first-use order."""
    seen: dict[str, ir.Backend] = {}
    for _, member in ir.model_members(runnable):
        seen.setdefault(member.member.backend.name, member.member.backend)
    return list(seen.values())


# ------------------------------------------------------------------------------------------------
# Values flowing through a record's plan
class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()  # a node not run: its cascade step was not reached


@dataclass
class Extracted:
    sample: Sample
    answer: str | None  # the extracted answer text
    key: str | None  # its equivalence key


@dataclass
class MemberVotes:
    name: str
    answers: list[str | None] = field(default_factory=list)  # extracted answers, sample order
    keys: list[str | None] = field(default_factory=list)  # a failed sample: None, as unreadable
    drawn: list[Sample | None] = field(default_factory=list)  # per key: its sample (None: failed)
    samples: list[Sample] = field(default_factory=list)  # the samples that came back
    failed: list[str] = field(default_factory=list)  # errors of the samples that did not
    error: str | None = None  # why the member has no votes for this record: every sample failed
    path: list[str] = field(default_factory=list)  # [member, ..., model] for nested muxes
    no_answer: list[str] = field(default_factory=list)  # replies with no answer: their reasons

    def add(self, item: Any) -> None:
        """One sample's outcome, in sample order: an ``Extracted`` or a ``SampleFailure``."""
        if isinstance(item, SampleFailure):
            # counts in k and never wins, as Algorithm 1 treats an unreadable sample
            self.answers.append(None)
            self.keys.append(None)
            self.drawn.append(None)
            self.failed.append(item.error)
            return
        self.answers.append(item.answer)
        self.keys.append(item.key)
        self.drawn.append(item.sample)
        self.samples.append(item.sample)
        reason = no_answer(item.sample)
        if reason is not None:  # a refusal, a content filter: unreadable, counted in k
            self.no_answer.append(reason)

    def settle(self) -> "MemberVotes":
        if self.failed and not self.samples:
            self.error = self.failed[0]
        return self


@dataclass
class MuxResult:
    mux: str
    answer: str | None = None
    key: str | None = None
    model: str | None = None  # the winning pool member
    path: list[str] = field(default_factory=list)  # winner, down to the model, when nested
    confidence: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    votes: dict[str, list[str | None]] = field(default_factory=dict)
    keys: dict[str, list[str | None]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)  # members with some samples failed
    no_answer: dict[str, str] = field(default_factory=dict)  # members with replies without one
    drawn: dict[str, int] | None = None  # adaptive: samples drawn per model member
    bounds: tuple[float, float] | None = None  # adaptive, stopped early: full-budget confidence
    decision: semantics.Decision | None = None
    text: str | None = None  # full text of the first sample of the chosen member giving the answer
    samples: list[Sample] = field(default_factory=list)  # every sample drawn under this mux
    error: str | None = None


@dataclass
class RecordResult:
    record: Any
    result: MuxResult | None = None
    steps: list[MuxResult] = field(default_factory=list)  # cascades: every step that ran
    error: str | None = None
    bad_input: bool = False  # the record itself was unusable (not an object, a field missing)
    latency: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    def output(self) -> dict[str, Any]:
        """The JSON object ``muxlang run`` writes for this record."""
        out: dict[str, Any] = {}
        if isinstance(self.record, dict) and "id" in self.record:
            out["id"] = self.record["id"]
        r = self.result
        samples = [s for step in (self.steps or ([r] if r else [])) for s in step.samples]
        # None when no sample's server reported usage
        tokens_in = (sum(s.input_tokens or 0 for s in samples)
                     if any(s.input_tokens is not None for s in samples) else None)
        tokens_out = (sum(s.output_tokens or 0 for s in samples)
                      if any(s.output_tokens is not None for s in samples) else None)
        out.update({
            "answer": r.answer if r else None,
            "model": r.model if r else None,
            "confidence": r.confidence if r else None,
            "text": r.text if r else None,
            "votes": dict(r.votes) if r else {},
            "missing": list(r.missing) if r else [],
            "error": self.error,
            "tokens": {"input": tokens_in, "output": tokens_out},
            "latency": round(self.latency, 4),
        })
        if r and len(r.path) > 1:
            out["path"] = r.path
        if r and r.failures:
            out["failures"] = dict(r.failures)
        if r and r.partial:
            out["partial"] = dict(r.partial)
        if r and r.no_answer:
            out["no_answer"] = {name: scrub(text) for name, text in r.no_answer.items()}
        reported = [s.cost for s in samples if s.cost is not None and not s.cached]
        if reported:  # USD a gateway reported for the samples drawn now (x-litellm-response-cost)
            out["reported_cost"] = sum(reported)
        drawn = {}
        for step in (self.steps or ([r] if r else [])):
            for name, n in (step.drawn or {}).items():
                drawn[name] = drawn.get(name, 0) + n
        if drawn:
            out["samples"] = drawn
        if r and r.bounds is not None:
            out["confidence_bounds"] = list(r.bounds)
        if r and r.scores:
            out["scores"] = dict(r.scores)
        cached = sum(1 for s in samples if s.cached)
        if cached:
            out["cached"] = cached
        if self.steps:
            out["step"] = r.mux if r else None
            out["steps"] = [{"mux": s.mux, "answer": s.answer, "model": s.model,
                             "confidence": s.confidence, "error": s.error}
                            for s in self.steps]
        if out["error"] is not None:
            out["error"] = scrub(out["error"])
        if out["text"] is not None:  # a cached sample may predate masking at arrival
            out["text"] = scrub(out["text"])
        for name, text in out.get("failures", {}).items():
            out["failures"][name] = scrub(text)
        return out


# ------------------------------------------------------------------------------------------------
# The record layer
class PlanExecutor:
    """Runs one plan template for records. Thread-unsafe; one per run (per event loop)."""

    def __init__(self, plan: nx.DiGraph, runtime: Runtime, *,
                 accuracies: Mapping[str, float] | None = None):
        from muxlang.stdlib import registry

        self.plan = plan
        self.runtime = runtime
        self.accuracies = dict(accuracies or {})
        self.output_node = plan.graph.get("output") or _sink(plan)
        self.generations = [sorted(g) for g in nx.topological_generations(plan)]
        self.preds = {n: list(plan.predecessors(n)) for n in plan.nodes}
        self.data = {n: dict(d) for n, d in plan.nodes(data=True)}
        self.edge = {(a, b): dict(d) for a, b, d in plan.edges(data=True)}
        # generate node -> (group key, render node): samples of one member share one request
        self.render_of = {n: next(p for p in self.preds[n] if self.data[p].get("op") == "render")
                          for n, d in self.data.items() if d.get("op") == "generate"}
        self._extractors: dict[str, Callable[[str], str | None]] = {}
        self._keys: dict[str, Callable[[str], str | None]] = {}
        self._rules: dict[str, Callable[..., Any]] = {}
        for node, data in plan.nodes(data=True):
            task = data.get("task")
            if task is not None and task.name not in self._extractors:
                self._extractors[task.name] = registry.make_extractor(task.extract)
                equivalence = registry.make_equivalence(task.equivalence)
                self._keys[task.name] = equivalence.key
            mux = data.get("mux")
            if data.get("op") == "select" and mux is not None:
                self._rules[mux.name] = registry.get_rule(mux.rule)
        # the pool of each select node, in member order: (member index, pred node, PoolMember)
        self.members: dict[str, list[tuple[int, str, ir.PoolMember]]] = {}
        for node, data in plan.nodes(data=True):
            if data.get("op") != "select":
                continue
            mux: ir.Mux = data["mux"]
            entries = []
            for pred in self.preds[node]:
                edge = plan.edges[pred, node]
                if edge.get("adaptive"):  # its model members come from the adaptive node
                    entries.extend((index, pred, member) for index, member in enumerate(mux.pool)
                                   if member.is_model)
                    continue
                index = edge.get("member")
                if index is None:
                    continue
                entries.append((index, pred, mux.pool[index]))
            self.members[node] = sorted(entries, key=lambda entry: entry[0])

    @property
    def requests_per_record(self) -> int:
        return sum(1 for _, d in self.plan.nodes(data=True) if d.get("op") == "generate") or 1

    async def run_record(self, record: Any) -> RecordResult:
        start = time.monotonic()
        outcome = RecordResult(record=record)
        try:
            if not isinstance(record, dict):
                raise RecordError(f"a record must be a JSON object, not {type(record).__name__}")
            values = await self._walk(record)
            final = values.get(self.output_node)
            if isinstance(final, tuple):  # cascade: (chosen, steps)
                outcome.result, outcome.steps = final
            elif isinstance(final, MuxResult):
                outcome.result = final
            if outcome.result is None:
                outcome.error = "no result"
            elif outcome.result.error is not None:
                outcome.error = outcome.result.error
        except RecordError as error:
            outcome.error = str(error)
            outcome.bad_input = True
        outcome.latency = time.monotonic() - start
        return outcome

    async def _walk(self, record: dict) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for generation in self.generations:
            pending_generate: list[str] = []
            pending_adaptive: list[str] = []
            for node in generation:
                data = self.data[node]
                op = data.get("op")
                preds = self.preds[node]
                if op != "cascade" and any(values.get(p) is SKIP for p in preds):
                    values[node] = SKIP
                    continue
                if op == "generate":
                    pending_generate.append(node)
                elif op == "adaptive":
                    pending_adaptive.append(node)
                elif op == "render":
                    values[node] = render(data["task"], record)
                elif op == "extract":
                    values[node] = self._extract(data["task"], values[preds[0]])
                elif op == "vote":
                    values[node] = self._vote(node, data, values)
                elif op == "select":
                    values[node] = self._select(node, data, values)
                elif op == "gate":
                    prev = values[preds[0]]
                    escalate = semantics.escalates(prev.decision, data["threshold"])
                    values[node] = True if escalate else SKIP
                elif op == "cascade":
                    values[node] = self._cascade(node, values)
                else:  # an op this executor does not know: pass the predecessor's value on
                    values[node] = values[preds[0]] if preds else None
            if pending_adaptive:
                await asyncio.gather(self._generate(pending_generate, values),
                                     *(self._adaptive(node, values) for node in pending_adaptive))
            elif pending_generate:
                await self._generate(pending_generate, values)
        return values

    async def _generate(self, nodes: list[str], values: dict[str, Any]) -> None:
        groups: dict[tuple[str, str], tuple[ir.Model, Messages, list[str]]] = {}
        for node in nodes:
            model: ir.Model = self.data[node]["model"]
            render_node = self.render_of[node]
            messages = values[render_node]
            key = (f"{model.backend.name}/{model.name}", render_node)
            if key not in groups:
                groups[key] = (model, messages, [])
            groups[key][2].append(node)

        async def one(model: ir.Model, messages: Messages, members: list[str]) -> None:
            indices = sorted({self.data[n]["sample"] for n in members})
            got = await self.runtime.sample(model, messages, indices)
            by_index = dict(zip(indices, got))
            for n in members:
                values[n] = by_index[self.data[n]["sample"]]

        await asyncio.gather(*(one(*group) for group in groups.values()))

    def _extract(self, task: ir.Task, generated: Sample | SampleFailure) -> Any:
        if isinstance(generated, SampleFailure):
            return generated
        if no_answer(generated) is not None:  # never read: an empty text must not be a vote
            return Extracted(generated, None, None)
        try:
            answer = self._extractors[task.name](generated.text)
        except Exception:  # noqa: BLE001 - an extractor bug must not sink the run
            answer = None
        key = None
        if answer is not None:
            try:
                key = self._keys[task.name](answer)
            except Exception:  # noqa: BLE001
                key = None
        return Extracted(generated, answer, key)

    def _vote(self, node: str, data: dict[str, Any], values: dict[str, Any]) -> MemberVotes:
        model: ir.Model = data["model"]
        extracts = []
        for pred in self.preds[node]:
            sample_index = self.edge[pred, node].get("sample", 0)
            extracts.append((sample_index, values[pred]))
        extracts.sort(key=lambda pair: pair[0])
        votes = MemberVotes(name=model.name, path=[model.name])
        for _, item in extracts:
            votes.add(item)
        return votes.settle()

    async def _adaptive(self, node: str, values: dict[str, Any]) -> None:
        """Draw an adaptive mux's model members in rounds (``semantics.next_draws``) until its
        decision is settled; the value is ``{pool position: MemberVotes}``. Where a server
        draws several samples per request, a round is split only when the samples the split
        may save are worth more than the prompt it may add (``runtime.rounds``)."""
        data = self.data[node]
        mux: ir.Mux = data["mux"]
        task: ir.Task = data["task"]
        messages = next(values[p] for p in self.preds[node] if self.data[p].get("op") == "render")
        inputs: list[semantics.MemberInput] = [[] for _ in mux.pool]
        for pred in self.preds[node]:
            index = self.edge[pred, node].get("member")
            if index is not None:
                inner = values[pred]
                inputs[index] = inner.decision or semantics.Failed(inner.error or "no result")
        votes = {i: MemberVotes(name=m.name, path=[m.name]) for i, m in enumerate(mux.pool)
                 if m.is_model}
        # only exact's rounds are sized by what a request costs (delta(p)'s stay fixed)
        rounds = self.runtime.rounds if mux.adaptive == "exact" else None
        split: set[int] = set()  # members whose last round left samples for later
        while True:
            overhead = None if rounds is None else {
                i: rounds.overhead(self.runtime, mux, i)
                for i, m in enumerate(mux.pool) if m.is_model}
            want = semantics.next_draws(mux, inputs, self.accuracies, data.get("threshold"),
                                        overhead)
            if not want:
                break
            if rounds is not None:
                self._note_splits(mux, rounds, want, votes, split)

            async def draw(index: int, count: int) -> None:
                model = mux.pool[index].member
                start = len(votes[index].keys)
                got = await self.runtime.sample(model, messages, list(range(start, start + count)))
                for result in got:
                    votes[index].add(self._extract(task, result))
                inputs[index] = list(votes[index].keys)

            await asyncio.gather(*(draw(i, n) for i, n in want.items()))
        if rounds is not None:
            for index in split:  # settled without what these splits left
                rounds.resolved(mux.name, index, needed=False)
        values[node] = {index: member.settle() for index, member in votes.items()}

    @staticmethod
    def _note_splits(mux: ir.Mux, rounds: Any, want: dict[int, int],
                     votes: dict[int, MemberVotes], split: set[int]) -> None:
        """Before a round: a member drawing again needed what its last split left; one whose
        round leaves samples for later opens a split (``runtime/rounds.py``)."""
        for index, count in want.items():
            if index in split:
                rounds.resolved(mux.name, index, needed=True)
                split.discard(index)
            if count < mux.pool[index].samples - len(votes[index].keys):
                rounds.opened(mux.name, index)
                split.add(index)

    def _select(self, node: str, data: dict[str, Any], values: dict[str, Any]) -> MuxResult:
        """The mux's decision (``muxlang.semantics``) over its members' votes and nested results."""
        mux: ir.Mux = data["mux"]
        result = MuxResult(mux=mux.name)
        given: dict[int, MemberVotes | MuxResult] = {}
        inputs: list[semantics.MemberInput] = []
        for index, pred, member in self.members[node]:
            value = values[pred]
            if isinstance(value, dict):  # drawn by the mux's adaptive node
                value = value[index]
            given[index] = value
            result.samples.extend(value.samples)
            if isinstance(value, MuxResult):  # a nested mux: one member, its decision
                inputs.append(value.decision if value.decision is not None
                              else semantics.Failed(value.error or "no result"))
                if value.error is None:
                    result.votes[member.name] = [value.answer]
                    result.keys[member.name] = [value.key]
            elif value.error is not None:
                inputs.append(semantics.Failed(value.error))
            else:
                inputs.append(value.keys)
                result.votes[member.name] = list(value.answers)
                result.keys[member.name] = list(value.keys)
                if value.failed:
                    result.partial[member.name] = (
                        f"{len(value.failed)} of {len(value.keys)} samples failed (counted as "
                        f"unreadable): {scrub(value.failed[0])}")
                if value.no_answer:
                    result.no_answer[member.name] = (
                        f"{len(value.no_answer)} of {len(value.keys)} replies had no answer "
                        f"(counted as unreadable): {value.no_answer[0]}")
        decision = semantics.decide_mux(mux, inputs, self.accuracies, self._rules[mux.name])
        result.decision = decision
        result.confidence = decision.confidence
        if mux.adaptive != "off":
            result.drawn = dict(decision.drawn)
            result.bounds = decision.bounds
        result.scores = dict(decision.scores)
        result.missing = list(decision.missing)
        result.failures = {name: scrub(text) for name, text in decision.failures.items()}
        result.error = decision.error
        if decision.error is not None or decision.index is None:
            return result  # every member failed, or nobody gave a readable answer
        result.model = decision.member
        result.path = decision.path if len(decision.path) > 1 else [decision.member]
        result.key = decision.answer
        winner = given[decision.index]
        if isinstance(winner, MuxResult):
            result.answer, result.text = winner.answer, winner.text
        else:
            for answer, key, sample in zip(winner.answers, winner.keys, winner.drawn):
                if sample is not None and key == decision.answer:  # the first that gave it
                    result.answer, result.text = answer, sample.text
                    break
        return result

    def _cascade(self, node: str, values: dict[str, Any]) -> tuple[MuxResult | None,
                                                                   list[MuxResult]]:
        steps = []
        for pred in self.preds[node]:
            step = self.edge[pred, node].get("step", 0)
            if values.get(pred) is not SKIP:
                steps.append((step, values[pred]))
        steps.sort(key=lambda pair: pair[0])
        ran = [value for _, value in steps]
        chosen = semantics.chosen_step([value.decision for value in ran])
        return next((value for value in ran if value.decision is chosen), None), ran


def _sink(plan: nx.DiGraph) -> str:
    sinks = [n for n in plan.nodes if plan.out_degree(n) == 0]
    if len(sinks) != 1:
        raise MuxError("the execution plan has no single output node")
    return sinks[0]


def plan_for(spec: ir.Spec, runnable: ir.Runnable) -> nx.DiGraph:
    from muxlang.compiler import build_plan

    return build_plan(spec, runnable)
