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

User plugins: an installed distribution that declares entry points in the group
``muxlang.plugins`` adds names to these tables. The entry point's name is ``KIND.NAME`` with KIND
one of ``extractor``, ``equivalence``, ``rule``, ``confidence``; its value is the factory (``"module:attr"``),
whose parameters (read from its signature: a default's type is the accepted type, no default =
required) the checker checks like a stdlib function's. For example, in a plugin's pyproject.toml:

    [project.entry-points."muxlang.plugins"]
    "extractor.last_word" = "my_plugin:last_word"

A stdlib name always wins over a plugin's. Entry points are read only when a name is not in the
stdlib (or a table is listed), so a spec that uses stdlib names alone never pays for the scan.
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


class _Table(dict):
    """A name → Entry table that reads the plugins' entry points on its first miss or listing."""

    def __init__(self, kind: str, entries: dict[str, "Entry"]):
        super().__init__(entries)
        self.kind = kind

    def _more(self) -> None:
        load_plugins()

    def __missing__(self, name: str) -> "Entry":
        self._more()
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        self._more()
        return dict.__contains__(self, name)

    def get(self, name: Any, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __iter__(self):
        self._more()
        return dict.__iter__(self)

    def keys(self):  # type: ignore[override]
        self._more()
        return dict.keys(self)

    def items(self):  # type: ignore[override]
        self._more()
        return dict.items(self)

    def values(self):  # type: ignore[override]
        self._more()
        return dict.values(self)

    def __len__(self) -> int:
        self._more()
        return dict.__len__(self)


_NUM = (int, float)
_EX = "muxlang.stdlib.extractors"
_EQ = "muxlang.stdlib.equivalence"
_SEL = "muxlang.stdlib.selection"
_ARGS = "muxlang.stdlib.arguments"
_LIT = "muxlang.stdlib.literals"

EXTRACTORS: dict[str, Entry] = _Table("extractor", {
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
        Entry("code", f"{_LIT}:code",
              "a program as written: the last fenced code block, else the whole text"),
        Entry("python_literal", f"{_LIT}:python_literal_extractor",
              "a Python literal answer: the last code block or `code`, else the stripped text"),
        Entry("first_of", f"{_LIT}:first_of",
              "the first of up to four extractors (named as strings) that reads an answer, "
              "e.g. first_of(\"json_field\", \"python_literal\"): members recorded in "
              "different formats",
              tuple(Param(n, (str,), None, required=(n == "first")) for n in
                    ("first", "second", "third", "fourth")),
              check=f"{_ARGS}:first_of"),
    ]
})

EQUIVALENCES: dict[str, Entry] = _Table("equivalence", {
    e.name: e
    for e in [
        Entry("exact", f"{_EQ}:exact", "equal strings after trimming whitespace"),
        Entry("numeric", f"{_EQ}:numeric", "equal numbers within a tolerance (18 = 18.00 = $18)",
              (Param("tolerance", _NUM, 1e-6),), check=f"{_ARGS}:numeric"),
        Entry("math", f"{_EQ}:math", "symbolic equality of MATH answers (math-verify)"),
        Entry("letter", f"{_EQ}:letter", "equal letters, case-insensitive"),
        Entry("python_literal", f"{_LIT}:python_literal",
              "equal Python values (ast.literal_eval), else equal stripped strings"),
        Entry("execution", "muxlang.stdlib.execution:execution",
              "code answers: same outputs on the record's probe inputs (sandboxed runs)",
              (Param("probes", (str,), "probes"), Param("prefix", (str,), "prompt"),
               Param("entry", (str,), "entry_point"), Param("timeout", _NUM, 2.0)),
              check=f"{_ARGS}:execution"),
    ]
})

RULES: dict[str, Entry] = _Table("rule", {
    e.name: e
    for e in [
        Entry("slm_mux", f"{_SEL}:slm_mux",
              "SLM-MUX: most self-consistent model wins, ties by validation accuracy"),
        Entry("majority", f"{_SEL}:majority",
              "Agent Forest: majority over all samples of all pool models"),
        Entry("single", f"{_SEL}:single",
              "self-consistency of the pool model with the best validation accuracy"),
    ]
})

PLUGIN_GROUP = "muxlang.plugins"
_PLUGINS_LOADED = False
PLUGIN_ERRORS: list[str] = []  # entry points that could not be read (shown by check's hints)


def _param_of(parameter: Any) -> Param:
    import inspect

    default = parameter.default
    if default is inspect.Parameter.empty:
        kinds = {str: (str,), int: _NUM, float: _NUM, bool: (bool,)}
        kind = kinds.get(parameter.annotation, (str, int, float, bool))
        return Param(parameter.name, kind, None, required=True)
    if isinstance(default, bool):
        return Param(parameter.name, (bool,), default)
    if isinstance(default, (int, float)):
        return Param(parameter.name, _NUM, default)
    if isinstance(default, str):
        return Param(parameter.name, (str,), default)
    return Param(parameter.name, (str, int, float, bool), default)


@dataclass(frozen=True)
class PluginEntry(Entry):
    """A plugin's factory: ``check`` calls it, so what it refuses ``muxlang check`` reports."""

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        from muxlang.errors import MuxError

        if self.params == () and not kwargs:
            return
        try:
            self.load()(**kwargs)
        except MuxError:
            raise
        except Exception as error:  # noqa: BLE001 - the plugin's refusal, with its words
            raise MuxError(f"{self.name}: {error}") from error


def plugin_entry(kind: str, name: str, target: str) -> Entry:
    """An Entry for a plugin factory ``target`` ("module:attr"), parameters from its signature."""
    import inspect

    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    params = tuple(_param_of(p) for p in inspect.signature(factory).parameters.values()
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) if kind != "rule" else ()
    doc = (inspect.getdoc(factory) or f"{kind} from plugin {module_name}").splitlines()[0]
    return PluginEntry(name, target, doc, params) if kind != "rule" else Entry(name, target, doc)


def register(kind: str, name: str, target: str) -> Entry:
    """Add a plugin ``kind`` (extractor | equivalence | rule) named ``name``; a stdlib name is
    never replaced (returns the existing entry)."""
    table = {"extractor": EXTRACTORS, "equivalence": EQUIVALENCES, "rule": RULES,
             "confidence": CONFIDENCES}[kind]
    if dict.__contains__(table, name):
        return dict.__getitem__(table, name)
    entry = plugin_entry(kind, name, target)
    dict.__setitem__(table, name, entry)
    return entry


def load_plugins(*, force: bool = False) -> None:
    """Read the ``muxlang.plugins`` entry points once (again with ``force``)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED and not force:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        kind, _, name = point.name.partition(".")
        if kind not in ("extractor", "equivalence", "rule", "confidence") or not name:
            PLUGIN_ERRORS.append(f"{point.name}: the name must be KIND.NAME "
                                 "(extractor, equivalence, rule or confidence)")
            continue
        try:
            register(kind, name, point.value)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break check
            PLUGIN_ERRORS.append(f"{point.name} = {point.value}: {type(error).__name__}: {error}")


CONFIDENCES: dict[str, Entry] = _Table("confidence", {
    e.name: e
    for e in [
        Entry("self_consistency", "muxlang.stdlib.confidence:self_consistency",
              "a member's top answer's count / k (the paper's; the default)"),
        Entry("logprob_vote", "muxlang.stdlib.confidence:logprob_vote",
              "CISC: a vote weighted by softmax(mean token log-probability / temperature)",
              (Param("temperature", _NUM, 1.0),)),
    ]
})

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
