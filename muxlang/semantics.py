"""What a mux or cascade answers, given the samples drawn for each member: the one home of it.

``run`` (the executor, live), ``eval`` (replay from the store), the simulator's plain reference
and, later, ``serve`` all decide through this module, so one spec has one meaning wherever it is
computed. (The vectorised simulator is a second implementation for flat pools, proven equal to
this one by differential tests.)

The meaning, decided once (docs/language.md, "What a mux answers"):

- A **model member** drawn k times puts its k samples' equivalence keys, in sample-index order,
  before the mux's rule (``stdlib.selection.Ballot.of_samples``); its answer is its most frequent
  readable key, ties to the key whose first sample came first.
- A **nested mux** is one member whose single answer carries the confidence its own rule gave it
  (``Ballot.of_answer``) — exactly what the parent's ``scores`` reports for it. The alternative,
  handing the parent all samples of the inner winner, would let the inner mux's *selection* be
  counted again as *agreement* (a winner is picked for being consistent, so its samples overstate
  how consistent the nested mux as a whole is), and would make a nested mux vote k times in
  ``majority`` while its losing members' samples vanish. One answer with its confidence keeps
  the nested mux a black box, as a member should be. Its tie-break accuracy is the ``accuracy``
  typed on the nested mux.
- A member whose every request failed is **missing**: it is left out of the rule (the others
  decide) and listed with its error; when all members are missing the mux has an ``error``.
- Tie-break accuracies: none at all with ``tie_break = order``; otherwise a model's measured
  validation accuracy, else the accuracy typed on it; a nested mux's typed accuracy.
- A **cascade** runs its steps in order and stops at the first whose confidence reaches its
  threshold (a step that failed, or answered nothing, escalates); its answer is the last step
  that ran and answered (a failed escalation falls back to the step before it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

from muxlang import ir
from muxlang.stdlib.selection import Ballot, Key, Selection, top_answer

Rule = Callable[[Sequence[Ballot], Sequence[Optional[float]]], Selection]


@dataclass(frozen=True)
class Failed:
    """A member that gave no samples for this record: every request for it failed."""

    error: str


@dataclass(frozen=True)
class Decision:
    """One mux's decision on one record."""

    mux: str
    answer: Key = None  # the chosen equivalence key; None when no member had a readable answer
    index: Optional[int] = None  # pool position of the chosen member
    member: Optional[str] = None  # its name
    confidence: float = 0.0
    scores: Mapping[str, float] = field(default_factory=dict)  # answering member -> confidence
    tops: Mapping[str, Key] = field(default_factory=dict)  # answering member -> its answer
    missing: tuple[str, ...] = ()  # members left out: every request failed
    failures: Mapping[str, str] = field(default_factory=dict)  # missing member -> why
    inner: Optional["Decision"] = None  # the chosen member's own decision, when it is a mux
    error: Optional[str] = None  # every member failed
    # adaptive sampling stopped early: the bounds of the confidence the full budget would give
    # (``confidence`` itself is over the samples drawn)
    bounds: Optional[tuple[float, float]] = None
    drawn: Mapping[str, int] = field(default_factory=dict)  # model member -> samples drawn

    @property
    def path(self) -> list[str]:
        """The chosen member, down to the model whose samples gave the answer."""
        if self.member is None:
            return []
        return [self.member, *(self.inner.path if self.inner is not None else [])]

    @property
    def model(self) -> Optional[str]:
        """The model whose samples gave the answer (the end of ``path``)."""
        path = self.path
        return path[-1] if path else None


MemberInput = Union[Sequence[Key], Decision, Failed]


def member_accuracy(mux: ir.Mux, member: ir.PoolMember,
                    measured: Mapping[str, Optional[float]]) -> Optional[float]:
    """The accuracy that breaks ties for ``member`` of ``mux`` (see the module docstring)."""
    if mux.tie_break == "order":
        return None
    if member.is_model:
        value = measured.get(member.name)
        return value if value is not None else member.member.accuracy
    return member.member.accuracy


_RULES: dict[str, Rule] = {}


def rule_of(mux: ir.Mux) -> Rule:
    """The mux's selection rule (loaded once per name: rules are imported lazily)."""
    rule = _RULES.get(mux.rule.name)
    if rule is None:
        from muxlang.stdlib.registry import get_rule

        rule = _RULES[mux.rule.name] = get_rule(mux.rule)
    return rule


def _ballot(member: ir.PoolMember, given: MemberInput) -> Ballot:
    if isinstance(given, Decision):
        return Ballot.of_answer(given.answer, given.confidence)
    return Ballot.of_samples(list(given)[:member.samples])


def decide_mux(mux: ir.Mux, inputs: Sequence[MemberInput],
               measured: Mapping[str, Optional[float]] | None = None,
               rule: Rule | None = None) -> Decision:
    """The decision of ``mux`` given one input per pool member, in pool order: a model's drawn
    keys (sample-index order; the first ``samples`` are used), a nested mux's ``Decision``, or
    ``Failed``. ``measured``: validation accuracies by model name."""
    measured = measured or {}
    answering: list[int] = []
    ballots: list[Ballot] = []
    accuracies: list[Optional[float]] = []
    missing: list[str] = []
    failures: dict[str, str] = {}
    for position, (member, given) in enumerate(zip(mux.pool, inputs)):
        if isinstance(given, Decision) and given.error is not None:
            given = Failed(given.error)
        if isinstance(given, Failed):
            missing.append(member.name)
            failures[member.name] = given.error
            continue
        answering.append(position)
        ballots.append(_ballot(member, given))
        accuracies.append(member_accuracy(mux, member, measured))
    if not answering:
        detail = "; ".join(f"{name}: {text}" for name, text in failures.items())
        return Decision(mux.name, missing=tuple(missing), failures=failures,
                        error=f"mux '{mux.name}': every pool member failed"
                        + (f" ({detail})" if detail else ""))
    selection = (rule or rule_of(mux))(ballots, accuracies)
    names = [mux.pool[p].name for p in answering]
    scores = {name: float(b.confidence) for name, b in zip(names, ballots)}
    tops = {name: b.top for name, b in zip(names, ballots)}
    drawn = {m.name: len(g) for m, g in zip(mux.pool, inputs)
             if m.is_model and not isinstance(g, (Decision, Failed))}
    common = dict(scores=scores, tops=tops, missing=tuple(missing), failures=failures,
                  drawn=drawn)
    if selection.index is None:
        return Decision(mux.name, confidence=float(selection.confidence or 0.0), **common)
    position = answering[selection.index]
    chosen = inputs[position]
    return Decision(mux.name, answer=selection.answer, index=position,
                    member=mux.pool[position].name, confidence=float(selection.confidence),
                    inner=chosen if isinstance(chosen, Decision) else None,
                    bounds=_bounds(mux, inputs, position, selection.answer), **common)


def _bounds(mux: ir.Mux, inputs: Sequence[MemberInput], position: int,
            answer: Key) -> Optional[tuple[float, float]]:
    """Where the full-budget confidence lies when fewer samples were drawn (None otherwise)."""
    drawn = [(m, list(g)) for m, g in zip(mux.pool, inputs)
             if m.is_model and not isinstance(g, (Decision, Failed))]
    left = {m.name: max(m.samples - len(keys), 0) for m, keys in drawn}
    if not any(left.values()):
        return None
    if mux.rule.name == "majority":
        votes = sum(keys.count(answer) for _, keys in drawn) + sum(
            1 for g in inputs if isinstance(g, Decision) and g.error is None
            and g.answer == answer)
        total = sum(m.samples for m, _ in drawn) + sum(
            1 for g in inputs if isinstance(g, Decision) and g.error is None)
        remaining = sum(left.values())
        return votes / total, (votes + remaining) / total
    member = mux.pool[position]
    if not member.is_model:
        return None
    keys = list(inputs[position])[:member.samples]
    count = top_answer(keys)[1]
    return count / member.samples, (count + left[member.name]) / member.samples


def escalates(decision: Decision, threshold: float) -> bool:
    """Whether a cascade goes on past this step."""
    return decision.error is not None or decision.confidence < threshold


def chosen_step(ran: Sequence[Decision]) -> Optional[Decision]:
    """A cascade's answer: the last step that ran and answered, else the last that ran."""
    answered = [d for d in ran if d.error is None]
    return answered[-1] if answered else (ran[-1] if ran else None)


@dataclass
class Outcome:
    """What a runnable answered on one record."""

    decision: Optional[Decision]  # the mux's, or the cascade's chosen step's
    steps: list[Decision] = field(default_factory=list)  # cascades: every step that ran
    used: dict[str, int] = field(default_factory=dict)  # model -> samples the steps that ran use

    @property
    def answer(self) -> Key:
        return self.decision.answer if self.decision is not None else None

    @property
    def step(self) -> int:
        """Index of the chosen cascade step (0 for a mux)."""
        for position, step in enumerate(self.steps):
            if step is self.decision:
                return position
        return 0


def decide(runnable: ir.Runnable, drawn: Mapping[str, Sequence[Key] | Failed],
           measured: Mapping[str, Optional[float]] | None = None,
           overhead: Mapping[str, float] | None = None) -> Outcome:
    """The whole answer of a mux or cascade on one record, from the keys drawn per model name
    (sample-index order; a member drawn k times uses the first k; a model absent from
    ``drawn`` failed). ``overhead``: per model name, one more request's cost in its samples,
    where its server draws several per request (adaptive rounds, ``_round``; default 0)."""
    measured = measured or {}
    used: dict[str, int] = {}

    def run_mux(mux: ir.Mux, threshold: Optional[float] = None) -> Decision:
        inputs: list[MemberInput] = []
        for member in mux.pool:
            if member.is_model:
                inputs.append(drawn.get(member.name, Failed("no samples")))
            else:
                inputs.append(run_mux(member.member))
        if mux.adaptive != "off":
            costs = {i: (overhead or {}).get(m.name, 0.0) for i, m in enumerate(mux.pool)}
            inputs = adaptive_prefixes(mux, inputs, measured, threshold, costs)
        for member, given in zip(mux.pool, inputs):
            if member.is_model and not isinstance(given, Failed):
                n = min(len(given), member.samples)
                used[member.name] = max(used.get(member.name, 0), n)
        return decide_mux(mux, inputs, measured)

    if isinstance(runnable, ir.Cascade):
        ran: list[Decision] = []
        for mux in runnable.steps:
            ran.append(run_mux(mux, runnable.threshold))
            if not escalates(ran[-1], runnable.threshold):
                break
        return Outcome(chosen_step(ran), ran, used)
    return Outcome(run_mux(runnable), [], used)


def adaptive_prefixes(mux: ir.Mux, inputs: Sequence[MemberInput],
                      measured: Mapping[str, Optional[float]] | None = None,
                      threshold: Optional[float] = None,
                      overhead: Mapping[int, float] | None = None) -> list[MemberInput]:
    """The prefixes of the given samples that ``adaptive = exact`` draws, round by round
    (``next_draws``): what a live run would have drawn had the samples come in this order."""
    full = list(inputs)
    drawn: list[MemberInput] = [given if isinstance(given, (Decision, Failed)) else []
                                for given in full]
    while True:
        want = next_draws(mux, drawn, measured, threshold, overhead)
        grew = False
        for position, count in want.items():
            have = len(drawn[position])
            drawn[position] = list(full[position][:have + count])
            grew = grew or len(drawn[position]) > have
        if not grew:  # settled (or nothing more to read)
            return drawn


# ------------------------------------------------------------------------------------------------
# Adaptive sampling: the same decision for fewer samples
#
# ``adaptive = exact`` draws a mux's model members in rounds and stops as soon as the remaining
# samples cannot change the answer, the chosen member, or (as a cascade step) which side of the
# threshold the confidence falls on. Member m with budget k, n drawn, r = k - n left and top count
# a ends with confidence in [a / k, (a + r) / k] (the final top count is at least a and at most
# a + r). Deciding on the drawn samples then gives the full-budget answer and member: a member
# left out has drawn confidence <= its upper bound <= the winner's lower bound <= the winner's
# drawn confidence. The confidence reported is over the samples drawn (between the bounds).
def _top_settled(keys: Sequence[Key], budget: int) -> bool:
    """Whether the member's answer can no longer change with its remaining samples: every
    other answer (seen or not) ends below the top, or level with it but first sampled later."""
    left = budget - len(keys)
    if left <= 0:
        return True
    top, count = top_answer(keys)
    if top is None:
        return False
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for key in keys:
        if key is not None:
            first.setdefault(key, len(first))
            counts[key] = counts.get(key, 0) + 1
    if count < left:  # an answer not seen yet could still overtake it
        return False
    for key, n in counts.items():
        if key == top:
            continue
        if n + left > count or (n + left == count and first[key] < first[top]):
            return False
    return True


@dataclass
class _Member:
    position: int
    priority: tuple  # lower sorts first: wins ties
    low: float  # bounds of its final confidence
    high: float
    budget: int
    keys: Sequence[Key]  # drawn so far; a nested mux: its one answer
    nested: bool = False
    overhead: float = 0.0  # one more request's cost, in this member's samples (see _round)

    @property
    def left(self) -> int:
        return self.budget - len(self.keys)


def _members(mux: ir.Mux, inputs: Sequence[MemberInput],
             measured: Mapping[str, Optional[float]],
             overhead: Mapping[int, float] | None = None) -> list[_Member]:
    out = []
    for position, (member, given) in enumerate(zip(mux.pool, inputs)):
        if isinstance(given, Decision) and given.error is not None:
            given = Failed(given.error)
        if isinstance(given, Failed):
            continue
        accuracy = member_accuracy(mux, member, measured)
        priority = (accuracy is None, -(accuracy or 0.0), position)
        if isinstance(given, Decision):
            value = given.confidence if given.answer is not None else 0.0
            out.append(_Member(position, priority, value, value, 1, (given.answer,), True))
            continue
        keys = list(given)[:member.samples]
        k = member.samples
        _, count = top_answer(keys)
        out.append(_Member(position, priority, count / k, (count + k - len(keys)) / k, k, keys,
                           overhead=(overhead or {}).get(position, 0.0)))
    return out


def _beats(a: _Member, b: _Member) -> bool:
    """a surely ends ahead of b under slm_mux."""
    return a.low > 0 and (a.low > b.high or (a.low == b.high and a.priority < b.priority))


def _settled_side(low: float, high: float, threshold: Optional[float]) -> bool:
    return threshold is None or low >= threshold or high < threshold


def _half(k: int) -> int:
    return max(1, -(-k // 2))


def _quarter(k: int) -> int:
    """ceil(k / 4), at least 1: a round of ``delta(p)``."""
    return max(1, -(-k // 4))


def _round(member: _Member, size: int) -> int:
    """A round of ``size`` samples of the member, or all it has left when the samples a later
    round could save are not worth one more request.

    Where a server draws several samples in one request (``n > 1``), the prompt is billed once
    per request, not per sample: splitting a budget into rounds costs one more prompt whenever
    the later round is needed. ``member.overhead`` is that prompt in the member's own samples
    (prompt tokens per request / completion tokens per sample; 0 where every sample is its own
    request, and in replay). A split is kept only when what it leaves for later is more
    samples than that overhead: the round it may save is worth more than the prompt it may
    add. With overhead 0 this is ``min(left, size)``."""
    size = min(member.left, size)
    return member.left if member.left - size <= member.overhead else size


def _chunk(member: _Member) -> int:
    """The next round of a member deciding alone: half its budget (a unanimous half settles its
    answer: the rest can at most tie it, and ties go to the answer sampled first), then half of
    what is left."""
    return _round(member, _half(member.budget if not member.keys else member.left))


def next_draws(mux: ir.Mux, inputs: Sequence[MemberInput],
               measured: Mapping[str, Optional[float]] | None = None,
               threshold: Optional[float] = None,
               overhead: Mapping[int, float] | None = None) -> dict[int, int]:
    """What to draw next under the mux's ``adaptive`` policy (see ``exact_draws``); under
    ``delta(p)`` also ``{}`` once the chance that the full budget would select otherwise (or, as
    a cascade step, fall on the other side of the threshold) is below p, and rounds are
    quarters of a budget, so that it can stop between them. ``overhead`` (larger rounds where a
    request costs a prompt, ``_round``) applies under ``exact`` only: there the answer does not
    depend on the rounds, while delta(p) may stop on another answer after another prefix, and
    must answer the same live, served and replayed."""
    p = delta_of(mux)
    if p is not None:  # the rounds decide which prefix delta stops on: they must not vary
        overhead = None
    want = exact_draws(mux, inputs, measured, threshold, overhead)
    if p is None or not want:
        return want
    if change_probability(mux, inputs, measured or {}, threshold, stop_at=p) < p:
        return {}
    return {i: min(n, _quarter(mux.pool[i].samples)) for i, n in want.items()}


def most_rounds(mux: ir.Mux, position: int) -> int:
    """The most rounds (requests, where a server draws a round in one) the mux's adaptive
    policy can take for its model member at ``position``: 1 under ``off``. Every round of any
    rule draws at least half of what the member has left (under ``delta(p)`` also at most a
    quarter of its budget, whichever is fewer), and the round count only grows with what is
    left, so always taking that least round bounds them all (``--dry-run`` counts requests
    with it)."""
    budget = mux.pool[position].samples
    if mux.adaptive == "off" or budget <= 1:
        return 1
    quarter = _quarter(budget) if delta_of(mux) is not None else budget
    left, rounds = budget, 0
    while left > 0:
        left -= min(_half(left), quarter)
        rounds += 1
    return rounds


def policy_of(text: str) -> str:
    """A policy written as text (``off``, ``exact``, ``delta(p)`` with 0 < p < 1), normalised;
    ValueError with what is accepted otherwise (a request's ``mux.adaptive``, say)."""
    if not isinstance(text, str):
        shown = "null" if text is None else repr(text)
        raise ValueError(f"adaptive must be off, exact or delta(p) with 0 < p < 1, written as "
                         f"text, not {shown}")
    text = text.strip()
    if text in ("off", "exact"):
        return text
    if text.startswith("delta(") and text.endswith(")"):
        try:
            p = float(text[6:-1])
        except ValueError:
            p = -1.0
        if 0 < p < 1:
            return ir.delta_policy(p)
    raise ValueError(f"adaptive must be off, exact or delta(p) with 0 < p < 1, not {text!r}")


def delta_of(mux: ir.Mux) -> Optional[float]:
    """p of ``adaptive = delta(p)``, else None."""
    text = mux.adaptive
    return float(text[6:-1]) if text.startswith("delta(") else None


_NEW = "\x00new"  # a simulated answer no sample gave yet


def change_probability(mux: ir.Mux, inputs: Sequence[MemberInput],
                       measured: Mapping[str, Optional[float]], threshold: Optional[float],
                       simulations: int = 200, stop_at: Optional[float] = None) -> float:
    """The chance that drawing the rest of every budget changes the selection made now.

    Each model member's next samples are drawn from a Dirichlet posterior over its answers so
    far (counts + 1, plus one pseudo-count for an answer not seen yet), the full-budget decision
    is made on them, and the share of simulations where it picks another answer or member (or,
    as a cascade step, the other side of the threshold) is returned. Within a simulation every
    draw of the unseen answer is the same answer, the most an unseen answer can threaten (drawn
    as distinct answers they could never add up, and a single unanimous sample would settle a
    budget of ten); with one member and one answer seen this is Adaptive-Consistency's Beta
    rule. The generator is seeded by the mux's name and what was drawn, so a replay decides
    exactly as the live run did. With ``stop_at``, it returns as soon as the share can no
    longer end below it (the comparison with it comes out the same)."""
    import zlib

    import numpy as np

    now = decide_mux(mux, inputs, measured)
    seed = zlib.crc32(repr((mux.name, [list(g) if isinstance(g, (list, tuple)) else repr(g)
                                       for g in inputs])).encode("utf-8"))
    rng = np.random.default_rng(seed)
    plans = []
    for member, given in zip(mux.pool, inputs):
        if not member.is_model or isinstance(given, (Decision, Failed)):
            plans.append(None)
            continue
        keys = list(given)
        left = member.samples - len(keys)
        seen = list(dict.fromkeys(keys))
        plans.append((keys, left, seen, [keys.count(k) + 1.0 for k in seen] + [1.0]))
    changed = 0
    for s in range(simulations):
        full: list[MemberInput] = []
        for given, plan in zip(inputs, plans):
            if plan is None or plan[1] <= 0:
                full.append(given)
                continue
            keys, left, seen, alpha = plan
            picks = rng.choice(len(alpha), size=left, p=rng.dirichlet(alpha))
            full.append(keys + [seen[i] if i < len(seen) else f"{_NEW}{s}"
                                for i in picks.tolist()])
        final = decide_mux(mux, full, measured)
        if (final.answer, final.index) != (now.answer, now.index) or (
                threshold is not None
                and (final.confidence >= threshold) != (now.confidence >= threshold)):
            changed += 1
            if stop_at is not None and changed >= stop_at * simulations:
                return changed / simulations
    return changed / simulations


def exact_draws(mux: ir.Mux, inputs: Sequence[MemberInput],
                measured: Mapping[str, Optional[float]] | None = None,
                threshold: Optional[float] = None,
                overhead: Mapping[int, float] | None = None) -> dict[int, int]:
    """Under ``adaptive = exact``: how many more samples to draw from which model members
    (pool position -> count), given what was drawn so far (``inputs`` as for ``decide_mux``, a
    model's keys being the prefix drawn); ``{}`` when the decision is settled. ``threshold``:
    the cascade threshold when the mux is a cascade step. Rounds (docs/language.md):

    - slm_mux: first the member that wins all ties draws its whole budget (one request); then
      every member that can still win draws half its budget per round;
    - majority: every member draws half its budget per round;
    - single (and a member left alone to decide): half its budget, then half of what is left;
    - ``overhead`` (pool position -> one more request's cost in that member's samples, where a
      server draws several samples per request): a round takes all a member has left when the
      split would leave no more than that (``_round``).
    """
    members = _members(mux, inputs, measured or {}, overhead)
    drawable = [m for m in members if m.left > 0]
    if not drawable:
        return {}
    rule = mux.rule.name
    if rule == "single":
        chosen = min(members, key=lambda m: m.priority)
        if chosen.left <= 0 or (_top_settled(chosen.keys, chosen.budget)
                                and _settled_side(chosen.low, chosen.high, threshold)):
            return {}
        return {chosen.position: _chunk(chosen)}
    if rule == "majority":
        if _majority_settled(members, threshold):
            return {}
        return {m.position: _round(m, _half(m.budget)) for m in drawable}
    # slm_mux: the members that can still win
    live = [m for m in members
            if m.high > 0 and not any(_beats(o, m) for o in members if o is not m)]
    if len(live) <= 1:
        if not live:
            return {}
        (only,) = live
        if only.left <= 0 or (_top_settled(only.keys, only.budget)
                              and _settled_side(only.low, only.high, threshold)):
            return {}
        return {only.position: _chunk(only)}
    models = [m for m in members if not m.nested]
    lead = min(models, key=lambda m: m.priority)
    if lead.left > 0 and not any(m.keys for m in models if m is not lead):
        # the first round: the lead draws its whole budget (delta(p) in quarters: until it is
        # done, or the chance of a change is small, the others wait as they do under exact)
        return {lead.position: lead.left}
    want = {m.position: _round(m, _half(m.budget)) for m in live if m.left > 0}
    return want or {m.position: m.left for m in drawable}


def _majority_settled(members: list[_Member], threshold: Optional[float]) -> bool:
    """Majority: the leader's votes exceed every other answer's plus every vote not yet cast,
    no member that could still vote for it has a higher priority than its best voter, and (as a
    cascade step) its share of all votes is on one side of the threshold."""
    counts: dict[str, int] = {}
    voter: dict[str, tuple] = {}
    total = sum(m.budget for m in members)
    remaining = sum(max(m.left, 0) for m in members)
    for m in members:
        for key in m.keys:
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
                if key not in voter or m.priority < voter[key]:
                    voter[key] = m.priority
    if not counts:
        return remaining == 0
    leader = max(counts, key=counts.get)
    lead = counts[leader]
    if remaining >= lead or any(n + remaining >= lead for key, n in counts.items()
                                if key != leader):
        return False
    if any(m.left > 0 and m.priority < voter[leader] for m in members):
        return False
    return _settled_side(lead / total, (lead + remaining) / total, threshold)
