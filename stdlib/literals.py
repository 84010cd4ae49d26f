"""Python literals (CRUXEval-style answers) and extractor chains.

- extractor ``python_literal``: the text as a Python literal answer: the content of the last
  fenced code block or `inline code` when there is one, else the stripped text; a leading
  "answer:" / "assert f(...) ==" is dropped. None when nothing is left, or when what is left
  spans several lines and is no literal (prose: a reply whose JSON could not be read).
- equivalence ``python_literal``: the ``repr`` of ``ast.literal_eval(answer)`` (so ``'a'`` and
  ``"a"``, ``(1,2)`` and ``(1, 2)``, ``{1: 2, 3: 4}`` and ``{3: 4, 1: 2}`` agree; sets and dicts
  are keyed order-free), else the stripped string.
- extractor ``code``: a program as written: the last fenced code block's content when the text
  has one, else the text unchanged (indentation kept: a completion is a function's body).
- extractor ``first_of(first, second, third, fourth)``: the first extractor that reads an answer.
  It lets one task serve members recorded under different formats: ZeroEval models answer with a
  JSON object whose ``answer`` holds the literal, CodeLlama with the bare literal, so
  ``first_of("json_field", "python_literal")`` reads both.
"""
from __future__ import annotations

import ast
import re
import warnings
from typing import Callable

_MAX = 20000
_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n?(.*?)```", re.DOTALL)
_INLINE = re.compile(r"^`([^`]+)`$")
_LEAD = re.compile(r"^(?:answer\s*[:=]\s*|assert\s+.*?==\s*)", re.IGNORECASE | re.DOTALL)


def _literal_text(text: str) -> str | None:
    if not isinstance(text, str) or len(text) > _MAX:
        return None
    s = text.strip()
    blocks = _FENCE.findall(s)
    if blocks:
        s = blocks[-1].strip()
    m = _INLINE.match(s)
    if m:
        s = m.group(1).strip()
    s = _LEAD.sub("", s, count=1).strip() if s.lower().startswith(("answer", "assert")) else s
    if "\n" in s and not _is_literal(s):
        return None  # several lines that are no literal: prose, not an answer
    return s or None


def _is_literal(s: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.literal_eval(s)
        return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def python_literal_extractor() -> Callable[[str], "str | None"]:
    def extract(text: str) -> str | None:
        try:
            return _literal_text(text)
        except Exception:  # noqa: BLE001
            return None

    return extract


def code() -> Callable[[str], "str | None"]:
    def extract(text: str) -> str | None:
        if not isinstance(text, str) or not text.strip() or len(text) > 10 * _MAX:
            return None
        blocks = _FENCE.findall(text)
        return blocks[-1] if blocks else text

    return extract


def _canon(value: object, depth: int = 0) -> str:
    if depth > 100:
        raise ValueError("too deep")
    if isinstance(value, dict):
        items = sorted((_canon(k, depth + 1), _canon(v, depth + 1)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted(_canon(v, depth + 1) for v in value))
        return ("frozenset" if isinstance(value, frozenset) else "set") + "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_canon(v, depth + 1) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_canon(v, depth + 1) for v in value)
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def python_literal():
    """Equivalence: equal ``ast.literal_eval`` values (fallback: the stripped string)."""
    from muxlang.stdlib.equivalence import Equivalence, _guard

    def key(answer: str) -> str | None:
        s = answer.strip()
        if not s or len(s) > _MAX:
            return None
        try:
            with warnings.catch_warnings():  # "1_000x" → SyntaxWarning: a plain string here
                warnings.simplefilter("ignore")
                value = ast.literal_eval(s)
            return "v:" + _canon(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return "s:" + s

    return Equivalence("python_literal", _guard(key))


def first_of(first: str | None = None, second: str | None = None, third: str | None = None,
             fourth: str | None = None) -> Callable[[str], "str | None"]:
    from muxlang.ir import Call
    from muxlang.stdlib import arguments
    from muxlang.stdlib.registry import make_extractor

    arguments.first_of(first, second, third, fourth)
    chain = [make_extractor(Call(n)) for n in (first, second, third, fourth) if n is not None]

    def extract(text: str) -> str | None:
        for one in chain:
            try:
                answer = one(text)
            except Exception:  # noqa: BLE001
                answer = None
            if answer is not None:
                return answer
        return None

    return extract
