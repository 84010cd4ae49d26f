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
from muxlang.stdlib.selection import Ballot, Key, Selection

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
    common = dict(scores=scores, tops=tops, missing=tuple(missing), failures=failures)
    if selection.index is None:
        return Decision(mux.name, confidence=float(selection.confidence or 0.0), **common)
    position = answering[selection.index]
    chosen = inputs[position]
    return Decision(mux.name, answer=selection.answer, index=position,
                    member=mux.pool[position].name, confidence=float(selection.confidence),
                    inner=chosen if isinstance(chosen, Decision) else None, **common)


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
           measured: Mapping[str, Optional[float]] | None = None) -> Outcome:
    """The whole answer of a mux or cascade on one record, from the keys drawn per model name
    (sample-index order; a member drawn k times uses the first k; a model absent from
    ``drawn`` failed)."""
    measured = measured or {}
    used: dict[str, int] = {}

    def run_mux(mux: ir.Mux) -> Decision:
        inputs: list[MemberInput] = []
        for member in mux.pool:
            if member.is_model:
                given = drawn.get(member.name, Failed("no samples"))
                used[member.name] = max(used.get(member.name, 0), member.samples)
                inputs.append(given)
            else:
                inputs.append(run_mux(member.member))
        return decide_mux(mux, inputs, measured)

    if isinstance(runnable, ir.Cascade):
        ran: list[Decision] = []
        for mux in runnable.steps:
            ran.append(run_mux(mux))
            if not escalates(ran[-1], runnable.threshold):
                break
        return Outcome(chosen_step(ran), ran, used)
    return Outcome(run_mux(runnable), [], used)


def models_of(runnable: ir.Runnable) -> list[ir.Model]:
    """Every model a runnable can draw from (nested muxes and cascade steps), first-use order."""
    seen: dict[str, ir.Model] = {}

    def visit(mux: ir.Mux) -> None:
        for member in mux.pool:
            if member.is_model:
                seen.setdefault(member.name, member.member)
            else:
                visit(member.member)

    for mux in (runnable.steps if isinstance(runnable, ir.Cascade) else [runnable]):
        visit(mux)
    return list(seen.values())
