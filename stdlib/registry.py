"""Names a spec may use for extractors, equivalence rules and selection rules.

The checker needs the names and their parameters (to report unknown names and bad arguments with
a position) but must stay fast, so entries point at their implementation as ``"module:attr"``
strings and nothing heavy (math-verify, sympy) is imported until a spec actually runs.

Contracts of the implementations:
- extractor factory ``f(**args) -> Callable[[str], str | None]``: model text → answer text, or
  None when no answer can be read;
- equivalence factory ``f(**args) -> Equivalence`` with ``key(answer: str) -> str | None``: a
  canonical string, equal for equivalent answers (None when the answer cannot be understood);
- rule ``f(votes, accuracies) -> Selection`` (see ``muxlang.stdlib.selection``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from muxlang.ir import Call


@dataclass(frozen=True)
class Param:
    name: str
    kind: tuple[type, ...]  # accepted Python types of the value
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attr"
    doc: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    # "module:attr" of a cheap function that raises MuxError for arguments the factory would
    # refuse, so that ``muxlang check`` reports them without importing the implementation.
    check: str | None = None

    def load(self) -> Callable[..., Any]:
        module_name, attr = self.target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        """Raise MuxError when the factory would refuse these arguments."""
        if self.check is not None:
            module_name, attr = self.check.split(":")
            getattr(importlib.import_module(module_name), attr)(**kwargs)


_NUM = (int, float)
_EX = "muxlang.stdlib.extractors"
_EQ = "muxlang.stdlib.equivalence"
_SEL = "muxlang.stdlib.selection"
_ARGS = "muxlang.stdlib.arguments"

EXTRACTORS: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("final_number", f"{_EX}:final_number",
              "the final numeric answer: '####', 'The answer is', \\boxed{}, else the last number"),
        Entry("boxed", f"{_EX}:boxed", "the content of the last \\boxed{} (nested braces kept)"),
        Entry("choice_letter", f"{_EX}:choice_letter",
              "a multiple-choice letter: '##Answer: C##', 'Answer: (C)', 'The answer is C'",
              (Param("letters", (str,), "ABCD"),), check=f"{_ARGS}:choice_letter"),
        Entry("json_field", f"{_EX}:json_field",
              "a field of the JSON object in the text, e.g. {\"answer\": ...}",
              (Param("field", (str,), "answer"), Param("then", (str,), None)),
              check=f"{_ARGS}:json_field"),
        Entry("regex", f"{_EX}:regex", "the given group of the last match of a regular expression",
              (Param("pattern", (str,), required=True), Param("group", (int,), 1)),
              check=f"{_ARGS}:regex"),
    ]
}

EQUIVALENCES: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("exact", f"{_EQ}:exact", "equal strings after trimming whitespace"),
        Entry("numeric", f"{_EQ}:numeric", "equal numbers within a tolerance (18 = 18.00 = $18)",
              (Param("tolerance", _NUM, 1e-6),), check=f"{_ARGS}:numeric"),
        Entry("math", f"{_EQ}:math", "symbolic equality of MATH answers (math-verify)"),
        Entry("letter", f"{_EQ}:letter", "equal letters, case-insensitive"),
    ]
}

RULES: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("slm_mux", f"{_SEL}:slm_mux",
              "SLM-MUX: most self-consistent model wins, ties by validation accuracy"),
        Entry("majority", f"{_SEL}:majority",
              "Agent Forest: majority over all samples of all pool models"),
        Entry("single", f"{_SEL}:single",
              "self-consistency of the pool model with the best validation accuracy"),
    ]
}

_MODULES_DIR = Path(__file__).with_name("modules")


def module_names() -> list[str]:
    """Stdlib ``.mux`` modules, importable as ``import std.NAME``."""
    return sorted(p.stem for p in _MODULES_DIR.glob("*.mux"))


def module_path(name: str) -> Path | None:
    path = _MODULES_DIR / f"{name}.mux"
    return path if path.is_file() else None


def _build(table: dict[str, Entry], call: Call) -> Any:
    entry = table[call.name]
    return entry.load()(**call.kwargs)


def make_extractor(call: Call) -> Callable[[str], str | None]:
    return _build(EXTRACTORS, call)


def make_equivalence(call: Call) -> Any:
    return _build(EQUIVALENCES, call)


def get_rule(call: Call) -> Callable[..., Any]:
    return RULES[call.name].load()
