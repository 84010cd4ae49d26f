"""Typed results of the Python API (``muxlang.Session``): plain dataclasses, JSON-ready.

A leaf module: it imports nothing from muxlang, so every layer may build these (the optimizer
builds ``TuneResult``; the API builds ``EvalReport`` from ``muxlang.evaluation.evaluate``'s report
and ``RecordResult`` from the executor's output line).

``to_dict()`` gives the JSON the matching command prints: ``EvalReport.to_dict()`` is
``muxlang eval --json``, ``TuneResult.to_dict()`` is ``muxlang tune --json`` (same keys, same
order, same values); ``from_dict`` reads that JSON back. Keys a newer report carries that these
classes do not name yet are kept in ``extra`` and written back by ``to_dict``, so a round trip
never loses anything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

__all__ = [
    "RecordResult", "StepResult", "RunInfo", "EvalReport", "EvalRecord", "MethodFigure",
    "ModelFigure", "MuxFigure", "EvalDataset", "PoolEntry", "ValidationInfo", "TuneResult",
    "TuneEntry", "BestSingle", "TuneBaselines", "TuneDataset", "CurvePoint", "PoolSizeEntry",
    "TunePoint", "CollectResult",
]


# ------------------------------------------------------------------------------------------------
# (de)serialisation shared by every result class
class _Typed:
    """``from_dict``/``to_dict`` driven by the dataclass fields.

    ``_nested`` maps a field to its class: ``Cls`` (one object), ``_ListOf(kind)`` or
    ``_DictOf(kind)`` (keys kept); ``_omit_none`` names keys the JSON leaves out when they
    are None; ``_computed`` names fields that are not in the JSON (derived when reading);
    ``_renamed`` maps a field to its JSON key.
    """

    _nested: ClassVar[dict[str, Any]] = {}
    _omit_none: ClassVar[tuple[str, ...]] = ()
    _computed: ClassVar[tuple[str, ...]] = ()
    _renamed: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        data = dict(data)
        kwargs: dict[str, Any] = {}
        names = [f.name for f in dataclasses.fields(cls)
                 if f.name != "extra" and f.name not in cls._computed]
        for name in names:
            key = cls._renamed.get(name, name)
            if key not in data:
                continue
            value = data.pop(key)
            kind = cls._nested.get(name)
            if value is not None and kind is not None:
                value = _read(kind, value)
            kwargs[name] = value
        if any(f.name == "extra" for f in dataclasses.fields(cls)):
            kwargs["extra"] = data
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra" or f.name in self._computed:
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self._omit_none:
                continue
            out[self._renamed.get(f.name, f.name)] = _write(value)
        out.update(_write(getattr(self, "extra", None) or {}))
        return out


@dataclass(frozen=True)
class _ListOf:
    item: Any


@dataclass(frozen=True)
class _DictOf:
    item: Any


def _read(kind: Any, value: Any) -> Any:
    if isinstance(kind, _ListOf):
        return [_read(kind.item, v) for v in value]
    if isinstance(kind, _DictOf):
        return {k: _read(kind.item, v) for k, v in value.items()}
    return kind.from_dict(value) if isinstance(value, dict) else value


def _write(value: Any) -> Any:
    if isinstance(value, _Typed):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_write(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# run
@dataclass
class StepResult(_Typed):
    """One step of a cascade that ran for a record."""

    mux: str
    answer: Optional[str] = None
    model: Optional[str] = None
    confidence: Optional[float] = None
    error: Optional[str] = None


@dataclass
class RecordResult(_Typed):
    """What a mux or cascade answered for one record (``Session.run`` / ``Session.arun``).

    ``answer`` is the extracted answer, ``model`` the pool member whose answer was selected,
    ``confidence`` what the selection rule gave it, ``votes`` per member the extracted answers of
    its samples (sample order), ``scores`` per member its rule score, ``missing`` the members that
    failed (reasons in ``failures``), ``partial`` the members some of whose samples failed (they
    count as unreadable samples, in k), ``error`` why the record got no answer at all, and
    ``text`` the full text of a sample of the chosen member whose extracted answer is the
    selected one. A record holding the task's gold field is scored: ``gold`` is that field,
    ``correct`` whether the answer is equivalent to it (``muxlang.scoring``).
    """

    id: Any = None
    answer: Optional[str] = None
    model: Optional[str] = None
    confidence: Optional[float] = None
    votes: dict[str, list[Optional[str]]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    error: Optional[str] = None
    text: Optional[str] = None
    failures: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)  # member -> how many samples failed, why
    samples: dict[str, int] = field(default_factory=dict)  # adaptive: drawn per model member
    confidence_bounds: Optional[list[float]] = None  # adaptive, stopped early (docs/language.md)
    path: list[str] = field(default_factory=list)  # chosen member down to its model, nested muxes
    step: Optional[str] = None  # cascades: the step whose answer was taken
    steps: list[StepResult] = field(default_factory=list)  # cascades: every step that ran
    tokens_in: Optional[int] = None
    tokens_out: Optional[int] = None
    latency: float = 0.0
    cached: int = 0  # samples served by the store
    # member -> how many of its replies carried no answer (content null, a refusal), why
    no_answer: dict[str, str] = field(default_factory=dict)
    reported_cost: Optional[float] = None  # USD a gateway reported for the samples drawn now
    gold: Any = None  # the record's gold field, when it has one (muxlang.scoring)
    correct: Optional[bool] = None  # the answer's key equals the gold's; None: not scored

    _nested: ClassVar[dict[str, Any]] = {"steps": _ListOf(StepResult)}

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_output(cls, out: dict[str, Any], text: Optional[str] = None) -> "RecordResult":
        """From the JSON object ``muxlang run`` writes for a record (``text`` when that object
        carries none)."""
        tokens = out.get("tokens") or {}
        return cls(id=out.get("id"), answer=out.get("answer"), model=out.get("model"),
                   confidence=out.get("confidence"), votes=dict(out.get("votes") or {}),
                   scores=dict(out.get("scores") or {}), missing=list(out.get("missing") or []),
                   error=out.get("error"), text=out.get("text", text),
                   failures=dict(out.get("failures") or {}),
                   partial=dict(out.get("partial") or {}),
                   samples=dict(out.get("samples") or {}),
                   confidence_bounds=out.get("confidence_bounds"),
                   path=list(out.get("path") or []),
                   step=out.get("step"),
                   steps=[StepResult.from_dict(s) for s in out.get("steps") or []],
                   tokens_in=tokens.get("input"), tokens_out=tokens.get("output"),
                   latency=out.get("latency") or 0.0, cached=out.get("cached") or 0,
                   no_answer=dict(out.get("no_answer") or {}),
                   reported_cost=out.get("reported_cost"),
                   gold=out.get("gold"), correct=out.get("correct"))


@dataclass
class RunInfo:
    """How a run breaks ties, said once before it starts (``Runner.info``)."""

    mux: str
    accuracies: dict[str, float] = field(default_factory=dict)  # measured validation accuracies
    measured: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)  # mux -> model
    datasets: dict[str, str] = field(default_factory=dict)  # mux -> its validation dataset
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# evaluate
@dataclass
class EvalRecord(_Typed):
    """One evaluated item (from the first trial): the mux's answer key against the gold key."""

    id: Any = None
    answer: Optional[str] = None
    gold: Optional[str] = None
    correct: Optional[bool] = None
    model: Optional[str] = None
    confidence: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class MethodFigure(_Typed):
    """A method's accuracy over the trials (``se``) and over items (``item_se``) and its spend."""

    accuracy: float = 0.0
    se: float = 0.0
    item_se: float = 0.0
    tokens_per_question: Optional[float] = None
    cost_per_question: Optional[float] = None
    model: Optional[str] = None  # single_best, single_best_sc
    samples: Optional[int] = None  # single_best_sc
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _omit_none: ClassVar[tuple[str, ...]] = ("model", "samples")


@dataclass
class ModelFigure(_Typed):
    """One model's expected one-sample accuracy and what its stored samples hold."""

    accuracy: float = 0.0
    item_se: float = 0.0
    items: int = 0
    samples_per_item: list[int] = field(default_factory=list)  # [fewest, most]
    unreadable: float = 0.0
    in_pool: bool = False
    tokens_in: Optional[float] = None
    tokens_out: Optional[float] = None
    cost_per_sample: Optional[float] = None
    cost_source: Optional[str] = None  # "gateway" (reported costs) | "prices" | None (unknown)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class MuxFigure(_Typed):
    """The evaluated mux or cascade itself."""

    name: str = ""
    rule: str = ""
    tie_break: str = ""
    structured: bool = False
    adaptive: str = "off"  # "exact": drawn in rounds until the decision was settled
    mean_samples: Optional[float] = None  # samples drawn per item (a cascade or policy stops)
    answered_at_step: Optional[list[float]] = None  # cascades: share answered at each step
    accuracy: float = 0.0
    se: float = 0.0
    item_se: float = 0.0
    no_answer: float = 0.0
    tokens_per_question: Optional[float] = None
    cost_per_question: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class EvalDataset(_Typed):
    name: str = ""
    content_hash: str = ""
    items: int = 0
    scored_items: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class PoolEntry(_Typed):
    model: str = ""
    samples: int = 0
    stored_per_item: list[int] = field(default_factory=list)  # [fewest, most]
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ValidationInfo(_Typed):
    """Where the tie-break accuracies came from."""

    source: str = ""
    dataset: Optional[str] = None
    accuracies: dict[str, Optional[float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class EvalReport(_Typed):
    """``Session.evaluate``: a mux and the paper's baselines on stored samples.

    ``per_model`` {model: accuracy}, ``baselines`` {method: accuracy}, ``accuracy`` the mux's own,
    ``records`` per item; the rest (``details`` per method with standard errors and spend,
    ``models`` per model, ``validation``, ``notes``, ...) as ``muxlang eval`` shows it.
    """

    accuracy: float = 0.0  # the mux's own (= mux.accuracy)
    per_model: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    records: list[EvalRecord] = field(default_factory=list)
    mux: MuxFigure = field(default_factory=MuxFigure)
    dataset: EvalDataset = field(default_factory=EvalDataset)
    details: dict[str, MethodFigure] = field(default_factory=dict)
    models: dict[str, ModelFigure] = field(default_factory=dict)
    pool: list[PoolEntry] = field(default_factory=list)
    validation: ValidationInfo = field(default_factory=ValidationInfo)
    contradiction: float = 0.0
    contradiction_se: float = 0.0
    trials: int = 1
    seed: int = 0
    resampled: bool = False
    engine: str = ""
    store: str = ""
    spec: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _nested: ClassVar[dict[str, Any]] = {
        "records": _ListOf(EvalRecord), "mux": MuxFigure, "dataset": EvalDataset,
        "details": _DictOf(MethodFigure), "models": _DictOf(ModelFigure),
        "pool": _ListOf(PoolEntry),
        "validation": ValidationInfo}
    _computed: ClassVar[tuple[str, ...]] = ("accuracy",)
    _omit_none: ClassVar[tuple[str, ...]] = ("records",)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalReport":
        """From ``muxlang.evaluation.evaluate``'s report (the ``eval --json`` object)."""
        had_records = "records" in data
        report = super().from_dict(data)
        report.accuracy = report.mux.accuracy
        report._had_records = had_records
        return report

    def to_dict(self) -> dict[str, Any]:
        """Exactly the JSON object ``muxlang eval --json`` prints."""
        out = super().to_dict()
        if not self.records and not getattr(self, "_had_records", True):
            out.pop("records", None)  # a report made without per-record results has no key
        return out


# ------------------------------------------------------------------------------------------------
# tune
@dataclass
class TuneEntry(_Typed):
    """One configuration (pool {model: samples} and rule), scored on validation and test."""

    pool: dict[str, int] = field(default_factory=dict)
    rule: str = ""
    adaptive: str = "off"  # the mux's sampling policy ("off" | "exact")
    val_accuracy: float = 0.0
    val_se: float = 0.0
    val_se_items: float = 0.0
    union: float = 0.0
    contradiction: float = 0.0
    cost: float = 0.0
    tokens: float = 0.0
    samples: float = 0  # drawn per item: the budgets' sum, or the mean under adaptive = exact
    test_accuracy: Optional[float] = None
    test_se: Optional[float] = None
    test_se_items: Optional[float] = None
    in_val_interval: Optional[bool] = None
    test_cost: Optional[float] = None

    _omit_none: ClassVar[tuple[str, ...]] = ("test_cost",)


@dataclass
class BestSingle(TuneEntry):
    """The candidate that is best alone (one sample), with its scores."""

    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        return {"model": out.pop("model"), **out}


@dataclass
class TuneBaselines(_Typed):
    best_single: Optional[BestSingle] = None
    singles: dict[str, TuneEntry] = field(default_factory=dict)  # every model alone, 1 sample
    references: dict[str, TuneEntry] = field(default_factory=dict)  # non-candidates, e.g. a 72B

    _nested: ClassVar[dict[str, Any]] = {"best_single": BestSingle,
                                         "singles": _DictOf(TuneEntry),
                                         "references": _DictOf(TuneEntry)}


@dataclass
class TuneDataset(_Typed):
    name: str = ""
    items: int = 0
    sha256: str = ""
    content_sha256: Optional[str] = None  # the whole stored dataset's hash (before any split)

    _omit_none: ClassVar[tuple[str, ...]] = ("content_sha256",)


@dataclass
class CurvePoint(_Typed):
    """Accuracy of the best pool as one model's budget varies (the others fixed)."""

    budget: int = 0
    val_accuracy: float = 0.0
    test_accuracy: Optional[float] = None
    alone_val_accuracy: float = 0.0

    _omit_none: ClassVar[tuple[str, ...]] = ("test_accuracy",)


@dataclass
class PoolSizeEntry(_Typed):
    """The best pool of one size for one rule."""

    rule: str = ""
    size: int = 0
    pool: dict[str, int] = field(default_factory=dict)
    val_accuracy: float = 0.0
    test_accuracy: Optional[float] = None


@dataclass
class PolicyEntry(_Typed):
    """The winner's pool under one sampling policy, decided record by record on the first
    ``trials`` resampling trials (``delta(p)``, which the simulator does not replay, against the
    winner's own policy): ``chosen`` is the one the tuned mux uses."""

    adaptive: str = "off"
    val_accuracy: float = 0.0
    val_se: float = 0.0
    samples: float = 0.0  # drawn per item, the mean
    trials: int = 0
    chosen: bool = False
    # in the tune block's adaptive list; False: the full budget the search scored pools at when
    # the list names no off or exact, measured as the yardstick only (never chosen)
    listed: bool = True


@dataclass
class TunePoint(_Typed):
    """One feasible trial: its accuracy and spend (for the accuracy–cost picture)."""

    accuracy: float = 0.0
    cost: float = 0.0
    tokens: float = 0.0
    samples: int = 0


@dataclass
class TuneResult(_Typed):
    """``Session.tune``: the best configuration found on validation, scored on test.

    ``best.pool`` {model: samples}, ``best.rule``, ``best.val_accuracy``, ``best.test_accuracy``;
    ``front``: the Pareto set of the search objectives (``pareto`` in the JSON; with a single
    objective, the best configuration and any that tie with it); ``front_accuracy_cost``: the
    accuracy-vs-cost front of every feasible trial. Fields are in the order of the JSON.
    """

    tune: str = ""
    mux: str = ""
    objectives: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    sampler: str = ""
    space_size: int = 0
    trials: int = 0
    simulations: int = 0
    seed: int = 0
    study: Optional[str] = None
    penalty: float = 1.0
    dataset: TuneDataset = field(default_factory=TuneDataset)
    test: Optional[TuneDataset] = None
    accuracies: dict[str, Optional[float]] = field(default_factory=dict)
    best: TuneEntry = field(default_factory=TuneEntry)
    front: list[TuneEntry] = field(default_factory=list)
    front_accuracy_cost: list[TuneEntry] = field(default_factory=list)
    baselines: TuneBaselines = field(default_factory=TuneBaselines)
    curves: dict[str, list[CurvePoint]] = field(default_factory=dict)
    pool_sizes: list[PoolSizeEntry] = field(default_factory=list)
    points: list[TunePoint] = field(default_factory=list)
    policies: list[PolicyEntry] = field(default_factory=list)  # delta(p) on the winner's pool
    # the mux's own sampling policy when the tune block's adaptive list leaves it out: never
    # measured, and the tuned mux's (best.adaptive) replaces it (the summary says so)
    untried_adaptive: Optional[str] = None
    # what the cost objective counted: "usd" (prices or reported costs), else "tokens", else
    # "samples" (``Simulator.cost_unit``); the summary prints the cost in it
    cost_unit: str = "usd"
    warnings: list[str] = field(default_factory=list)
    spec: Optional[str] = None  # Session.tune: the spec file, the store, the split
    store: Optional[str] = None
    split: Optional[dict[str, Any]] = None  # {"fraction", "seed"} when VAL was split
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _nested: ClassVar[dict[str, Any]] = {
        "best": TuneEntry, "front": _ListOf(TuneEntry), "dataset": TuneDataset,
        "test": TuneDataset, "front_accuracy_cost": _ListOf(TuneEntry),
        "baselines": TuneBaselines, "curves": _DictOf(_ListOf(CurvePoint)),
        "pool_sizes": _ListOf(PoolSizeEntry), "points": _ListOf(TunePoint),
        "policies": _ListOf(PolicyEntry)}
    _renamed: ClassVar[dict[str, str]] = {"front": "pareto"}
    _omit_none: ClassVar[tuple[str, ...]] = ("untried_adaptive",)


# ------------------------------------------------------------------------------------------------
# collect
@dataclass
class CollectResult(_Typed):
    """``Session.collect``: what a collection found stored, drew, and could not draw."""

    dataset: str = ""
    items: int = 0
    wanted: int = 0  # samples the spec asks for (models x items x k)
    stored_before: int = 0  # already in the store before this collection
    drawn: int = 0  # drawn from the servers and stored now
    from_cache: int = 0  # stored meanwhile by another process
    failed: int = 0  # requests that failed (drawn again by the next collection)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    skipped_items: int = 0  # items whose prompt could not be rendered (see ``skipped``)
    errors: dict[str, int] = field(default_factory=dict)  # "model: error" -> count
    status: str = "ok"  # ok | failed | interrupted
    store: str = ""
    models: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list, repr=False)  # "item: reason"
    notes: list[str] = field(default_factory=list)

    @property
    def to_draw(self) -> int:
        return self.wanted - self.stored_before

    def summary(self) -> dict[str, Any]:
        """The run summary ``collect`` stores and prints with ``--json`` (without store, status)."""
        return {"dataset": self.dataset, "items": self.items, "wanted": self.wanted,
                "stored_before": self.stored_before, "drawn": self.drawn,
                "from_cache": self.from_cache, "failed": self.failed,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost": self.cost,
                "seconds": self.seconds, "skipped_items": self.skipped_items,
                "errors": dict(self.errors)}
