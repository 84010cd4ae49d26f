"""What each kind of declaration may say: its keys, the kind of value each takes, and ranges.

A field converts an AST value to the Python value the IR wants, or reports why it cannot through
the ``report`` callback and returns ``BAD``. Keeping these as data lets the checker give every key
the same treatment: unknown keys get "did you mean", wrong kinds say what was expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from muxlang.ir import delta_policy
from muxlang.lang import ast

BAD = object()  # a value that was reported as wrong

Report = Callable[[ast.Node, str, "str | None"], None]


class Field:
    expects = "a value"

    def convert(self, value: ast.Value, report: Report) -> Any:
        raise NotImplementedError

    def wrong(self, value: ast.Value, report: Report, hint: str | None = None) -> Any:
        report(value, f"expected {self.expects}, found {ast.describe(value)}", hint)
        return BAD


@dataclass
class Text(Field):
    expects = "a string"

    def convert(self, value, report):
        if isinstance(value, ast.Str):
            return value.value
        hint = f'quote it: "{value.name}"' if isinstance(value, ast.Ref) else None
        return self.wrong(value, report, hint)


@dataclass
class Url(Text):
    def convert(self, value, report):
        text = super().convert(value, report)
        if text is not BAD and not text.startswith(("http://", "https://")):
            report(value, f"not an http(s) URL: '{text}'", 'write e.g. "http://127.0.0.1:8000/v1"')
            return BAD
        return text


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}"


@dataclass
class Number(Field):
    low: float | None = None
    high: float | None = None
    integer: bool = False

    @property
    def expects(self) -> str:  # type: ignore[override]
        return "a whole number" if self.integer else "a number"

    def convert(self, value, report):
        if not isinstance(value, ast.Num):
            return self.wrong(value, report)
        if self.integer and not value.is_int:
            report(value, f"expected a whole number, found {value.text}", None)
            return BAD
        if (self.low is not None and value.value < self.low) or (
            self.high is not None and value.value > self.high
        ):
            report(value, f"{value.text} is out of range: must be {_bounds(self.low, self.high)}",
                   None)
            return BAD
        return value.value


def Int(low: float | None = None, high: float | None = None) -> Number:
    return Number(low, high, integer=True)


def _unit_number(value: ast.Num) -> str:
    """The number as a duration or rate may write it (digits, an optional fraction: no sign, no
    exponent), for a hint that can be pasted as is: 1e3 -> 1000."""
    text = value.text.lstrip("+")
    if text.replace(".", "", 1).isdigit() and not text.startswith(".") and not text.endswith("."):
        return text
    return f"{abs(value.value):f}".rstrip("0").rstrip(".")


@dataclass
class Seconds(Field):
    expects = "a duration such as 30s, 500ms or 2m"
    # A request timeout of 0s is a mistake, not "no timeout" (which aiohttp would make of it).
    positive: bool = False

    def convert(self, value, report):
        if isinstance(value, ast.Duration):
            if self.positive and value.seconds <= 0:
                report(value, f"{value.text} is out of range: must be above 0s", None)
                return BAD
            return value.seconds
        hint = f"add a unit: {_unit_number(value)}s" if isinstance(value, ast.Num) else None
        return self.wrong(value, report, hint)


@dataclass
class PerSecond(Field):
    expects = "a rate such as 20/s or 600/m"

    def convert(self, value, report):
        if isinstance(value, ast.Rate):
            if value.per_second <= 0:
                report(value, "a rate must be above zero", None)
                return BAD
            return value.per_second
        # the command line's --rate 50 means 50/s; a spec says the unit
        hint = f"add a unit: {_unit_number(value)}/s" if isinstance(value, ast.Num) else None
        return self.wrong(value, report, hint)


@dataclass
class Bytes(Field):
    """A size such as 8MB (10^6 bytes) or 512KiB (2^10 bytes), or a whole number of bytes."""

    expects = "a size such as 8MB, 512KiB or 100000B"
    low: int = 1

    def convert(self, value, report):
        if isinstance(value, ast.Size):
            count = value.bytes
        elif isinstance(value, ast.Num) and value.is_int:
            count = value.value
        else:
            return self.wrong(value, report)
        if count < self.low:
            report(value, f"{value.text} is out of range: must be at least {self.low} bytes",
                   None)
            return BAD
        return count


@dataclass
class Choice(Field):
    choices: tuple[str, ...] = ()

    @property
    def expects(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def convert(self, value, report):
        name = value.name if isinstance(value, ast.Ref) else (
            value.value if isinstance(value, ast.Str) else None)
        if name in self.choices:
            return name
        if name is None:
            return self.wrong(value, report)
        from muxlang.errors import did_you_mean

        report(value, f"'{name}' is not {self.expects}", did_you_mean(name, self.choices))
        return BAD


@dataclass
class Flag(Field):
    """true | false, or also ``auto`` (returned as None) when allowed."""

    allow_auto: bool = False

    @property
    def expects(self) -> str:  # type: ignore[override]
        return "true, false or auto" if self.allow_auto else "true or false"

    def convert(self, value, report):
        if isinstance(value, ast.Bool):
            return value.value
        if self.allow_auto and isinstance(value, ast.Ref) and value.name == "auto":
            return None
        return self.wrong(value, report)


# Words a variable that holds a key has in its name (OPENAI_API_KEY, HF_TOKEN, MY_SECRET, ...).
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASS", "AUTH", "BEARER", "CRED")


@dataclass
class EnvVar(Field):
    """``env("NAME")``: the environment variable an API key is read from, at request time.

    The key is sent to the backend's URL, so a spec may only name a variable whose name says it
    holds a secret (one of ``SECRET_WORDS``): ``env("HOME")`` or ``env("AWS_REGION")`` would send
    any value of the user's environment to whatever URL the spec names.
    """

    expects = 'env("VARIABLE_NAME")'

    def convert(self, value, report):
        if (isinstance(value, ast.Call) and value.name == "env" and len(value.args) == 1
                and isinstance(value.args[0].value, ast.Str) and value.args[0].name is None):
            arg = value.args[0].value
            name = arg.value
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                report(arg, f"'{name[:60]}' is not an environment variable name",
                       "a name of letters, digits and _, e.g. env(\"OPENAI_API_KEY\")")
                return BAD
            if not any(word in name.upper() for word in SECRET_WORDS):
                report(arg, f"api_key may not read '{name}': its name does not say it holds a "
                       "key, and the key is sent to the backend's URL",
                       "name a variable holding the key, e.g. env(\"OPENAI_API_KEY\") (its name "
                       f"must contain one of {', '.join(SECRET_WORDS)})")
                return BAD
            return name
        hint = "secrets are never written in a spec; name the environment variable that holds it"
        return self.wrong(value, report, hint)


@dataclass
class DeclRef(Field):
    """A reference to another declaration; resolved by the checker, which knows the names."""

    kinds: tuple[str, ...] = ()

    @property
    def expects(self) -> str:  # type: ignore[override]
        return " or ".join(f"the name of a {k}" for k in self.kinds)

    def convert(self, value, report):
        if isinstance(value, ast.Ref):
            return value
        return self.wrong(value, report)


@dataclass
class Function(Field):
    """A stdlib function by name, bare or called with arguments; checked by the checker."""

    table: str = ""  # "extractor" | "equivalence" | "rule"

    @property
    def expects(self) -> str:  # type: ignore[override]
        return f"the name of a stdlib {self.table}"

    def convert(self, value, report):
        if isinstance(value, (ast.Ref, ast.Call)):
            return value
        return self.wrong(value, report)


@dataclass
class Adaptive(Field):
    """``off``, ``exact`` or ``delta(p)`` (0 < p < 1): how a mux samples (docs/language.md)."""

    expects = "off, exact or delta(p)"

    def convert(self, value, report):
        if isinstance(value, ast.Ref) and value.name in ("off", "exact"):
            return value.name
        if isinstance(value, ast.Call) and value.name == "delta":
            args = value.args
            if (len(args) == 1 and args[0].name in (None, "p")
                    and isinstance(args[0].value, ast.Num)):
                p = args[0].value.value
                if 0 < p < 1:
                    return delta_policy(p)
                report(args[0].value, f"{args[0].value.text} is out of range: delta(p) needs "
                       "0 < p < 1", "the chance of a changed answer you accept, e.g. 0.05")
                return BAD
            report(value, "delta takes one number: the chance of a changed answer you accept",
                   "write e.g. delta(0.05)")
            return BAD
        from muxlang.errors import did_you_mean

        name = value.name if isinstance(value, (ast.Ref, ast.Call)) else None
        hint = did_you_mean(name, ("off", "exact", "delta")) if name else None
        return self.wrong(value, report, hint)


@dataclass
class ListOf(Field):
    item: Field = field(default_factory=Field)
    min_items: int = 0

    @property
    def expects(self) -> str:  # type: ignore[override]
        return "a list [ ... ]"

    def convert(self, value, report):
        if not isinstance(value, ast.List):
            return self.wrong(value, report, f"write [{_source_hint(value)}]")
        if len(value.items) < self.min_items:
            report(value, f"the list needs at least {self.min_items} item"
                   f"{'s' if self.min_items != 1 else ''}", None)
            return BAD
        items = [self.item.convert(v, report) for v in value.items]
        return BAD if any(i is BAD for i in items) else items


def _source_hint(value: ast.Value) -> str:
    return value.name if isinstance(value, ast.Ref) else "..."


@dataclass
class IntRange(Field):
    low: int = 0
    expects = "a range such as 1..9"

    def convert(self, value, report):
        if isinstance(value, ast.Num) and value.is_int and value.value >= self.low:
            return (value.value, value.value)
        if not isinstance(value, ast.Range):
            return self.wrong(value, report)
        lo, hi = value.low, value.high
        for end in (lo, hi):
            if not end.is_int:
                report(end, f"expected a whole number, found {end.text}", None)
                return BAD
        if lo.value < self.low:
            report(lo, f"{lo.text} is out of range: must be at least {self.low}", None)
            return BAD
        if hi.value < lo.value:
            report(value, f"empty range {lo.text}..{hi.text}", f"write {hi.text}..{lo.text}")
            return BAD
        return (lo.value, hi.value)


@dataclass
class Pool(Field):
    """``[model * 3, other_mux]``: returns the AST items; the checker resolves them.

    A bad sample count is reported here but the items are still returned, so that the checker
    goes on to resolve every member's name and reports all of a pool's mistakes in one run.
    """

    expects = "a pool [model * samples, ...]"

    def convert(self, value, report):
        if not isinstance(value, ast.List):
            return self.wrong(value, report, "write e.g. [llama8b * 3, gemma9b * 3]")
        if not value.items:
            report(value, "the pool is empty", "name at least one model: [llama8b * 3]")
            return BAD
        ok = True
        for item in value.items:
            if not isinstance(item, (ast.Member, ast.Ref)):
                report(item, f"expected a pool member such as llama8b * 3, found "
                       f"{ast.describe(item)}", None)
                ok = False
            elif isinstance(item, ast.Member) and not valid_count(item):
                report(item.count, f"samples must be a whole number of at least 1, found "
                       f"{item.count.text}", None)
        return value.items if ok else BAD


def valid_count(member: ast.Member) -> bool:
    return member.count.is_int and member.count.value >= 1


@dataclass
class Schema:
    fields: dict[str, Field]
    required: tuple[str, ...] = ()


SCHEMAS: dict[str, Schema] = {
    "backend": Schema({
        "kind": Choice(choices=("openai", "ollama", "replay")),
        "url": Url(),
        "api_key": EnvVar(),
        "concurrency": Int(1),
        "rate": PerSecond(),
        "timeout": Seconds(positive=True),
        "retries": Int(0, 100),
        "retry_time": Seconds(),
        "n": Flag(allow_auto=True),
        "max_response": Bytes(low=1024),
        "rate_scope": Choice(choices=("auto", "backend", "model")),
    }, required=("kind",)),
    "model": Schema({
        "backend": DeclRef(kinds=("backend",)),
        "id": Text(),
        "temperature": Number(0, 2),
        "top_p": Number(0, 1),
        "max_tokens": Int(1),
        "seed": Int(),
        "input_price": Number(0),
        "output_price": Number(0),
        "accuracy": Number(0, 1),
    }, required=("backend",)),
    "task": Schema({
        "system": Text(),
        "user": Text(),
        "extract": Function(table="extractor"),
        "equivalence": Function(table="equivalence"),
        "gold": Text(),
        "fields": ListOf(item=Text()),
    }, required=("user",)),
    "mux": Schema({
        "task": DeclRef(kinds=("task",)),
        "pool": Pool(),
        "rule": Function(table="rule"),
        "tie_break": Choice(choices=("accuracy", "order")),
        "validation": Text(),
        "accuracy": Number(0, 1),
        "adaptive": Adaptive(),
    }, required=("task", "pool")),
    "cascade": Schema({
        "steps": ListOf(item=DeclRef(kinds=("mux",)), min_items=1),
        "threshold": Number(0, 1),
    }, required=("steps",)),
    "tune": Schema({
        "mux": DeclRef(kinds=("mux",)),
        "candidates": ListOf(item=DeclRef(kinds=("model",)), min_items=1),
        "samples": IntRange(low=0),
        "pool_size": IntRange(low=1),
        "objectives": ListOf(item=Choice(choices=("accuracy", "cost", "samples",
                                                  "union_contradiction")),
                             min_items=1),
        "rules": ListOf(item=Function(table="rule"), min_items=1),
        "trials": Int(1),
        "simulations": Int(1),
        "penalty": Number(0),
        "sampler": Choice(choices=("auto", "grid", "tpe", "nsga2")),
        "max_samples": Int(1),
        "seed": Int(),
        "adaptive": ListOf(item=Adaptive(), min_items=1),
    }, required=("mux",)),
}

KINDS = tuple(SCHEMAS)
