"""What a run or a collection would send, without sending anything (``--dry-run``).

``run_plan(session, spec, records, mux)`` and ``collect_plan(collection)`` give a ``DryRunPlan``:
records, samples asked for, those the store already holds (served from it, not drawn), samples
and requests to send per backend, whether a request asks for several samples at once (``n > 1``:
a backend with ``n = true`` always, with ``n = auto`` when the server honours it, probed at the
start), and estimated tokens and cost. Input tokens are estimated as characters / 4 of the
prompt (once per request); output tokens as the model's ``max_tokens`` per sample (an upper
bound; unknown without ``max_tokens``); the cost only where the spec gives the model's prices
(else None, shown as —). A cascade's later steps and an adaptive mux may send fewer: the plan is
the most the run sends.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional


@dataclass
class BackendPlan:
    backend: str
    samples: int = 0  # samples to draw from this backend
    requests: int = 0  # requests, with n > 1 where it is used
    requests_without_n: int = 0  # requests if every sample is its own request
    n: str = "no"  # "yes" (n = true), "auto" (probed: yes when the server honours it), "no"


@dataclass
class DryRunPlan:
    command: str = "run"
    records: int = 0
    skipped: int = 0  # records that cannot run (not an object, a field missing)
    samples: int = 0  # samples the records ask for
    cached: int = 0  # of those, held by the store
    to_draw: int = 0
    backends: dict[str, BackendPlan] = field(default_factory=dict)
    tokens_in: Optional[float] = None
    tokens_out: Optional[float] = None  # None: some model has no max_tokens
    cost: Optional[float] = None  # None: some model has no price, or tokens_out unknown
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The plan as ``--dry-run`` prints it."""
        out = [f"dry run: nothing is sent. {self.records} records"
               + (f" ({self.skipped} cannot run)" if self.skipped else "")
               + f", {self.samples} samples asked for, {self.cached} in the store, "
               f"{self.to_draw} to draw"]
        for plan in self.backends.values():
            n = {"yes": "n > 1 used", "no": "one request per sample",
                 "auto": "n > 1 if the server honours it, probed at the start"}[plan.n]
            line = (f"  backend {plan.backend}: {plan.samples} samples in {plan.requests} "
                    f"requests ({n})")
            if plan.n == "auto" and plan.requests != plan.requests_without_n:
                line += f"; {plan.requests_without_n} requests if it does not"
            out.append(line)
        if not self.to_draw:
            out.append("  nothing to draw: no tokens, no cost")
            out.extend(f"  note: {note}" for note in self.notes)
            return out
        tokens_out = ("unknown (no max_tokens)" if self.tokens_out is None
                      else f"at most {self.tokens_out:,.0f}")
        out.append(f"  estimated tokens: {self.tokens_in or 0:,.0f} input (characters / 4), "
                   f"{tokens_out} output")
        out.append("  estimated cost: " + ("— (prices or max_tokens not in the spec)"
                                           if self.cost is None else f"at most ${self.cost:.4f}"))
        out.extend(f"  note: {note}" for note in self.notes)
        return out


class _Tally:
    def __init__(self, plan: DryRunPlan):
        self.plan = plan
        self.tokens_in = 0.0
        self.tokens_out: Optional[float] = 0.0
        self.cost: Optional[float] = 0.0

    def add(self, model: Any, messages: Any, wanted: int, missing: int, rounds: int = 1) -> None:
        """``rounds``: the most requests an adaptive mux may split the member's samples into
        where the server draws several per request (``semantics.most_rounds``)."""
        plan = self.plan
        plan.samples += wanted
        plan.cached += wanted - missing
        plan.to_draw += missing
        if not missing:
            return
        backend = model.backend
        entry = plan.backends.setdefault(backend.name, BackendPlan(
            backend.name, n={True: "yes", False: "no", None: "auto"}[backend.supports_n]))
        entry.samples += missing
        entry.requests_without_n += missing
        requests = missing if entry.n == "no" else min(missing, rounds)
        entry.requests += requests
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        tokens_in = requests * chars / 4
        self.tokens_in += tokens_in
        tokens_out = None if model.max_tokens is None else missing * model.max_tokens
        if self.tokens_out is not None:
            self.tokens_out = None if tokens_out is None else self.tokens_out + tokens_out
        priced = bool(model.price_input or model.price_output)
        if self.cost is not None:
            if not priced or (tokens_out is None and model.price_output):
                self.cost = None
            else:
                self.cost += tokens_in * model.price_input + (tokens_out or 0) * model.price_output

    def done(self) -> DryRunPlan:
        self.plan.tokens_in = self.tokens_in
        self.plan.tokens_out = self.tokens_out
        self.plan.cost = self.cost if self.plan.to_draw else 0.0
        if self.plan.to_draw == 0:
            self.plan.tokens_out = 0.0
        return self.plan


def run_plan(session: Any, spec: Any, records: Iterable[Any], mux: Any = None) -> DryRunPlan:
    """What ``session.run(spec, records, mux)`` would send (the store is read, when the session
    caches and it exists, for the samples it already holds; nothing is written)."""
    from muxlang.errors import MuxError
    from muxlang.prompts import render
    from muxlang.samples import SampleKey
    from muxlang.session import _spec, pool_members, runnable_of, store_exists

    spec = _spec(spec)
    runnable = runnable_of(spec, mux)
    members = pool_members(runnable, None)
    rounds = _rounds(runnable)
    plan = DryRunPlan("run")
    tally = _Tally(plan)
    store = None
    if session.cache and store_exists(session.store):
        store = session.open_store(must_exist=True)
    try:
        for record in records:
            plan.records += 1
            if not isinstance(record, dict):
                if not plan.skipped:
                    plan.notes.append(f"record {plan.records} cannot run: not a JSON object")
                plan.skipped += 1
                continue
            jobs = []
            try:
                rendered: dict[str, Any] = {}
                for model, task, k in members:
                    if task.name not in rendered:
                        rendered[task.name] = render(task, record)
                    jobs.append((model, rendered[task.name], k))
            except MuxError as error:
                if not plan.skipped:
                    plan.notes.append(f"record {plan.records} cannot run: {error}")
                plan.skipped += 1
                continue
            stored: dict[str, Any] = {}
            if store is not None:
                stored = store.get_samples_many([SampleKey.for_model(m, msgs)
                                                 for m, msgs, _ in jobs])
            for model, messages, k in jobs:
                missing = k
                if store is not None:
                    key = SampleKey.for_model(model, messages)
                    missing = len(store.missing_indices(key, k, stored.get(key.hash, [])))
                tally.add(model, messages, k, missing, rounds.get(model.name, 1))
    finally:
        if store is not None:
            store.close()
    from muxlang import ir

    if isinstance(runnable, ir.Cascade):
        plan.notes.append("a cascade's later steps run only for records that escalate: the "
                          "figures are the most it sends")
    policies = sorted({mux.adaptive for mux in ir.muxes_in(runnable) if mux.adaptive != "off"})
    if policies:
        stops = ("the answer is settled" if policies == ["exact"] else
                 "the answer is settled or a change is unlikely")
        plan.notes.append(f"adaptive = {', '.join(policies)} draws in rounds and stops once "
                          f"{stops}: samples, tokens and cost are the most it draws "
                          "(every budget), requests the most its rounds take")
    return tally.done()


def _rounds(runnable: Any) -> dict[str, int]:
    """Per model: the most rounds any adaptive mux may split its samples into."""
    from muxlang import ir
    from muxlang.semantics import most_rounds

    out: dict[str, int] = {}
    for mux, member in ir.model_members(runnable):
        n = most_rounds(mux, mux.pool.index(member))
        out[member.member.name] = max(out.get(member.member.name, 1), n)
    return out


def collect_plan(collection: Any) -> DryRunPlan:
    """What ``collection.draw()`` would send."""
    counts = collection.counts
    plan = DryRunPlan("collect", records=counts.items, skipped=counts.skipped_items)
    tally = _Tally(plan)
    for job in collection.todo:
        tally.add(job.model, job.messages, len(job.missing), len(job.missing))
    plan = tally.done()
    plan.samples, plan.cached = counts.wanted, counts.stored_before
    plan.notes.extend(counts.notes)
    return plan
