"""Argument checks for the stdlib factories, shared by the factories and by ``muxlang check``.

A spec like ``extract = regex("x(\\d+)", group = 3)`` is well-typed (a string, a whole number)
yet cannot work. The factories must refuse it, and ``muxlang check`` must say so with a position
instead of letting ``muxlang run`` fail later. The checker must stay fast, so it cannot import the
implementations (``extractors``, ``equivalence``: many compiled patterns); these checks therefore
live here, importing nothing but ``re``, and both sides call them.

Each check raises ``MuxError`` with a message that starts with the function's name and quotes the
argument at fault (``'group'``), which the checker uses to put the caret on that argument.
"""
from __future__ import annotations

import math
import re
from typing import Any

from muxlang.errors import MuxError


def regex(pattern: Any, group: Any = 1) -> re.Pattern:
    """``pattern`` compiles and has the group ``group``; returns the compiled pattern."""
    if not isinstance(pattern, str):
        raise MuxError("regex: 'pattern' must be a string")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise MuxError(f"regex: bad pattern {pattern!r}: {exc}") from exc
    if isinstance(group, bool) or not isinstance(group, int) or group < 0:
        raise MuxError(f"regex: 'group' must be a non-negative integer, got {group!r}")
    if group > compiled.groups:
        have = compiled.groups
        raise MuxError(
            f"regex: 'group' {group} does not exist: the pattern has {have} "
            f"group{'s' if have != 1 else ''}"
            + (" (write the answer part in parentheses)" if have == 0 else "")
        )
    return compiled


def choice_letter(letters: Any = "ABCD") -> str:
    """``letters`` is a non-empty string of letters; returns it without repeats."""
    if not isinstance(letters, str) or not letters:
        raise MuxError("choice_letter: 'letters' must be a non-empty string such as \"ABCD\"")
    unique = "".join(dict.fromkeys(letters))
    if not all(c.isalpha() for c in unique):
        raise MuxError(f"choice_letter: 'letters' must be letters only, got {letters!r}")
    return unique


def json_field(field: Any = "answer", then: Any = None) -> None:
    """``field`` is a non-empty string; ``then`` names another extractor usable without arguments."""
    if not isinstance(field, str) or not field:
        raise MuxError("json_field: 'field' must be a non-empty string")
    if then is None:
        return
    if then == "json_field":
        raise MuxError("json_field: 'then' cannot be json_field itself")
    from muxlang.errors import did_you_mean
    from muxlang.stdlib.registry import EXTRACTORS

    entry = EXTRACTORS.get(then) if isinstance(then, str) else None
    if entry is None:
        hint = did_you_mean(str(then), EXTRACTORS)
        raise MuxError(f"json_field: unknown extractor {then!r} for 'then'"
                       + (f" ({hint})" if hint else ""))
    if any(p.required for p in entry.params):
        raise MuxError(f"json_field: extractor {then!r} needs arguments; "
                       "it cannot be used as 'then'")


def numeric(tolerance: Any = 1e-6) -> None:
    """``tolerance`` is a finite number >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise MuxError(f"numeric: 'tolerance' must be a number, got {tolerance!r}")
    if not tolerance >= 0 or math.isinf(tolerance):
        raise MuxError(f"numeric: 'tolerance' must be a finite number >= 0, got {tolerance!r}")


def execution(probes: Any = "probes", prefix: Any = "prompt", entry: Any = "entry_point",
              timeout: Any = 2.0) -> None:
    """Field names are non-empty strings; ``timeout`` a number of seconds in (0, 60]."""
    for name, value in (("probes", probes), ("entry", entry)):
        if not isinstance(value, str) or not value:
            raise MuxError(f"execution: '{name}' must be a non-empty string (a record field)")
    if prefix is not None and not isinstance(prefix, str):
        raise MuxError("execution: 'prefix' must be a string (a record field)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise MuxError(f"execution: 'timeout' must be a number of seconds in (0, 60], got {timeout!r}")


CHAIN = ("first", "second", "third", "fourth")


def first_of(first: Any = None, second: Any = None, third: Any = None, fourth: Any = None) -> None:
    """Each given name is a known extractor usable without arguments, other than first_of."""
    from muxlang.errors import did_you_mean
    from muxlang.stdlib.registry import EXTRACTORS

    given = [(n, v) for n, v in zip(CHAIN, (first, second, third, fourth)) if v is not None]
    if not given:
        raise MuxError("first_of: 'first' must name an extractor, e.g. "
                       "first_of(\"json_field\", \"python_literal\")")
    for where, name in given:
        entry = EXTRACTORS.get(name) if isinstance(name, str) else None
        if entry is None or name == "first_of":
            hint = did_you_mean(str(name), EXTRACTORS)
            raise MuxError(f"first_of: '{where}': unknown extractor {name!r}"
                           + (f" ({hint})" if hint else ""))
        if any(p.required for p in entry.params):
            raise MuxError(f"first_of: '{where}': extractor {name!r} needs arguments; "
                           "it cannot be chained by name")
