"""muxlang: make several small language models answer like one large one (SLM-MUX).

The Python API (docs/api.md)::

    import muxlang

    spec = muxlang.load("specs/gsm8k.mux")        # or muxlang.loads(text); raises SpecError
    session = muxlang.Session(store="muxlang.sqlite", backends={"local": "http://gpu:8000/v1"})
    results = session.run(spec, [{"id": 1, "question": "What is 2 + 2?"}])   # [RecordResult]
    report = session.evaluate(spec, "gsm8k-test")                            # EvalReport
    tuned = session.tune(spec, "gsm8k-val", split=0.5)                       # TuneResult

Layers, each its own module: ``lang`` (grammar, parser, AST, loader, checker) → ``ir`` (the
checked spec) → ``compiler`` (declaration and plan graphs) → ``runtime`` (async executor, HTTP
backends) → ``store`` (samples) → ``optimizer`` (tuning) → ``session`` (this API) → ``commands``
(the CLI). The names below are loaded on first use, so ``import muxlang`` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "muxlang.session", "loads": "muxlang.session", "Spec": "muxlang.session",
    "Session": "muxlang.session", "Runner": "muxlang.session", "Collection": "muxlang.session",
    "MuxWarning": "muxlang.session",
    "SpecError": "muxlang.errors", "MuxError": "muxlang.errors", "Diagnostic": "muxlang.errors",
    **{name: "muxlang.results" for name in (
        "RecordResult", "StepResult", "RunInfo", "EvalReport", "EvalRecord", "MethodFigure",
        "ModelFigure", "MuxFigure", "EvalDataset", "PoolEntry", "ValidationInfo", "TuneResult",
        "TuneEntry", "BestSingle", "TuneBaselines", "TuneDataset", "CurvePoint",
        "PoolSizeEntry", "TunePoint", "CollectResult")},
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from muxlang.errors import Diagnostic, MuxError, SpecError
    from muxlang.results import (BestSingle, CollectResult, CurvePoint, EvalDataset, EvalRecord,
                                 EvalReport, MethodFigure, ModelFigure, MuxFigure, PoolEntry,
                                 PoolSizeEntry, RecordResult, RunInfo, StepResult, TuneBaselines,
                                 TuneDataset, TuneEntry, TunePoint, TuneResult, ValidationInfo)
    from muxlang.session import (Collection, MuxWarning, Runner, Session, Spec, load, loads)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'muxlang' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
