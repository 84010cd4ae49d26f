"""Equivalence rules: answer text → canonical key (equal keys ⇔ equivalent answers).

Every name in ``registry.EQUIVALENCES`` is a factory ``f(**args) -> Equivalence``. An
``Equivalence`` has ``key(answer) -> str | None``; ``None`` means "this answer cannot be
understood", and the selection rules never pick it. Grouping k answers therefore costs k key
computations (each cached), never k² pairwise comparisons.

- ``exact()``: the stripped text.
- ``numeric(tolerance)``: the number rounded to the tolerance grid, printed as a plain decimal
  ("18", "0.75", "-2", "1234"). "$18", "18.00", "1,234", "3/4", "\\frac{3}{4}", "18 dollars" and
  "50%" (= 50: a percent sign is dropped, as GSM8K writes percentages without it) are read;
  text that holds no single number ("cannot be determined", "3 and 4") is ``None``.
  Rounding to a grid is what makes a key possible; its price is that two values within tolerance
  that straddle a grid boundary get different keys (differences far below the tolerance never do,
  except at those boundaries).
- ``math()``: MATH answers, parsed once each by math-verify; the key is a canonical form of the
  SymPy value (see ``_MathKey``).
- ``letter()``: a single choice letter, upper-cased ("(c)" → "C").
"""
from __future__ import annotations

import re
import threading
import time
import zlib
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Callable

from muxlang.stdlib import arguments

_CACHE = 1 << 16
_MAX_ANSWER = 1000  # longer "answers" are not answers: key None (numeric/letter) or text (math)


class Equivalence:
    """A named canonicaliser: ``key(answer)`` is a string, equal for equivalent answers."""

    __slots__ = ("name", "key")

    def __init__(self, name: str, key: Callable[[str], "str | None"]):
        self.name = name
        self.key = key

    def __call__(self, answer: str) -> str | None:
        return self.key(answer)

    def equivalent(self, a: str, b: str) -> bool:
        ka, kb = self.key(a), self.key(b)
        return ka is not None and ka == kb

    def __repr__(self) -> str:
        return f"Equivalence({self.name})"


def _guard(fn: Callable[[str], "str | None"]) -> Callable[[str], "str | None"]:
    """Cache, and turn non-strings and any internal failure into None."""
    cached = lru_cache(maxsize=_CACHE)(fn)

    def key(answer: str) -> str | None:
        if not isinstance(answer, str):
            return None
        try:
            return cached(answer)
        except Exception:  # noqa: BLE001 - a key never raises on model text
            return None

    key.cache_info = cached.cache_info  # type: ignore[attr-defined]
    key.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return key


# --------------------------------------------------------------------------------------------
# exact


def exact() -> Equivalence:
    """Equal strings after trimming whitespace; the empty answer is None."""

    def key(answer: str) -> str | None:
        s = answer.strip()
        return s or None

    return Equivalence("exact", _guard(key))


# --------------------------------------------------------------------------------------------
# numeric

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NOISE = re.compile(
    r"\\(?:text|mathrm|textbf|mathbf|mbox|operatorname)\s*\{[^{}]*\}"  # units in \text{}
    r"|\\ |\\%|%|\\\$|\$|\\left|\\right|\\quad|\\displaystyle"
    r"|\^\s*\{?\s*\\circ\s*\}?|°"
)
_BOXED = re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.DOTALL)
_DEC = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,4})?"
_FULL_DEC = re.compile(r"^" + _DEC + r"$")
_FULL_FRAC = re.compile(r"^([-+]?)\s*(\d+)\s*/\s*(\d+)$")
_TEX_FRAC = re.compile(r"^([-+]?)\s*\\[dt]?frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")
_ANY_NUM = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?![\d.]*\w)")
_UNIT_RESIDUE = re.compile(r"^[\sA-Za-z.:=_'’]*$")
_MINUS = str.maketrans({"−": "-", "–": "-"})


def _unwrap_boxed(s: str) -> str:
    for _ in range(3):
        m = _BOXED.match(s)
        if not m:
            break
        s = m.group(1).strip()
    return s


def parse_number(text: str) -> Fraction | None:
    """The exact value of a number as models and datasets write it, or None.

    Reads "18", "-2", "18.00", "$18", "\\$18", "-$10,000", "1,234", "3/4", "\\frac{3}{4}",
    "\\dfrac34", "50%" (→ 50), "1e3", "18 dollars", "x = 5". Text with no number, or with several
    ("3 and 4", "2:00"), is None.
    """
    if len(text) > _MAX_ANSWER:
        return None
    s = _unwrap_boxed(text.strip().translate(_MINUS))
    s = re.sub(r"\\[,;:!]", "", s)  # thin spaces: "10,\!080", "1\,000"
    s = _NOISE.sub(" ", s)
    s = _THOUSANDS.sub("", s)
    s = s.strip().rstrip(".").strip()
    # "-$10,000" became "- 10000"; "$ -5" became "-5".
    s = re.sub(r"^([-+])\s+(?=[\d.])", r"\1", s)
    if not s:
        return None
    if _FULL_DEC.match(s):
        return _dec(s)
    m = _FULL_FRAC.match(s)
    if m:
        return _frac(m.group(1), m.group(2), m.group(3))
    m = _TEX_FRAC.match(s)
    if m:
        return _frac(m.group(1), m.group(2) or m.group(3), m.group(4) or m.group(5))
    # One number among unit words: "18 dollars", "5 cm", "x = 5".
    nums = _ANY_NUM.findall(s)
    if len(nums) != 1:
        return None
    residue = _ANY_NUM.sub(" ", s)
    if not _UNIT_RESIDUE.match(residue):
        return None
    return _dec(nums[0])


def _dec(s: str) -> Fraction | None:
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return Fraction(d)


def _frac(sign: str, num: str, den: str) -> Fraction | None:
    if int(den) == 0:
        return None
    f = Fraction(int(num), int(den))
    return -f if sign == "-" else f


def _decimal_text(value: Fraction | Decimal) -> str:
    """A plain decimal (no exponent, no trailing zeros, no -0) for a terminating value."""
    with localcontext() as ctx:
        if isinstance(value, Decimal):
            ctx.prec = max(60, len(value.as_tuple().digits) + 10)
            d = value
        else:
            num, den = value.numerator, value.denominator
            ctx.prec = max(60, len(str(num)) + len(str(den)) + 10)
            d = Decimal(num) / Decimal(den)
        text = format(d.normalize(), "f") if d != 0 else "0"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _snap(value: Fraction, step: Fraction | None) -> str:
    """The canonical text of ``value`` on the grid of ``step`` (exact when step is None)."""
    if step is None:
        den = value.denominator
        while den % 2 == 0:
            den //= 2
        while den % 5 == 0:
            den //= 5
        if den == 1:
            return _decimal_text(value)
        return f"{value.numerator}/{value.denominator}"
    q = round(value / step)  # round half to even: deterministic
    return _decimal_text(q * step)


def numeric(tolerance: float = 1e-6) -> Equivalence:
    """Numbers equal within ``tolerance`` (on a grid of that step); non-numbers are None."""
    arguments.numeric(tolerance)
    # The grid step as the decimal the user wrote (1e-6 → exactly 1/10**6, not the binary float).
    step = Fraction(Decimal(repr(float(tolerance)))) if tolerance > 0 else None

    def key(answer: str) -> str | None:
        value = parse_number(answer)
        if value is None:
            return None
        return _snap(value, step)

    return Equivalence(f"numeric(tolerance={tolerance!r})", _guard(key))


# --------------------------------------------------------------------------------------------
# letter

_LETTER_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LETTER_WORD = re.compile(r"^(?:option|choice|answer)\s*[:\s]\s*([A-Za-z])$", re.IGNORECASE)


def letter() -> Equivalence:
    """One choice letter, case-insensitive; "(C)", "c.", "**C**", "\\text{(C)}" → "C"."""

    def key(answer: str) -> str | None:
        if len(answer) > 100:
            return None
        s = _LETTER_WRAP.sub(r"\1", answer)
        s = re.sub(r"[^A-Za-z0-9\s:]", " ", s).strip()
        if len(s) == 1 and s.isalpha():
            return s.upper()
        m = _LETTER_WORD.match(re.sub(r"\s+", " ", s))
        if m:
            return m.group(1).upper()
        return None

    return Equivalence("letter", _guard(key))


# --------------------------------------------------------------------------------------------
# math

# Inputs that could make SymPy compute for a very long time (towers, huge exponents/factorials)
# are keyed by their normalised text instead, in every thread, so keys stay deterministic.
_DANGEROUS = re.compile(
    r"\^\s*\{?\s*[-+]?\d{5,}"          # x^{123456}
    r"|\^\s*\{[^{}]*\^"                # a^{b^c}
    r"|\^\s*\(?[\w.]+\)?\s*\^"         # a^b^c
    r"|\d{4,}\s*!|!\s*!"               # 1000!, n!!
    r"|\\(?:int|sum|prod|lim)\b"       # unevaluated calculus
)
_TIME_BUDGET = 2.0  # seconds per key, enforced with SIGALRM in the main thread only


class _KeyTimeout(Exception):
    pass


def _run_bounded(fn: Callable[[], "str | None"], budget: float) -> str | None:
    """Run ``fn`` with a wall-clock budget when a signal timer is available (main thread).

    Saves and restores any timer already armed (pytest-timeout, math-verify use SIGALRM too).
    """
    import signal

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return fn()

    def on_alarm(signum, frame):  # noqa: ARG001
        raise _KeyTimeout()

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, budget)
    if 0 < old_delay < budget:  # an outer timer is due sooner: keep its deadline
        signal.setitimer(signal.ITIMER_REAL, old_delay)
    try:
        return fn()
    except _KeyTimeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), old_interval)


_TEX_THIN = re.compile(r"(?<!\\)\\[,;:!]")  # "10,\!080", "x\,dx": no space
_TEX_SPACES = re.compile(r"(?<!\\)\\ |\\left\b|\\right\b|\\displaystyle|\\qquad|\\quad|~")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_WORDS = re.compile(r"^[A-Za-z]+(?: [A-Za-z]+)*$")  # "Evelyn", "east", "(C)"; not "p - q"
_OUTER = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _normalise_tex(answer: str) -> str:
    s = answer.strip()
    for _ in range(3):
        changed = False
        for a, b in _OUTER:
            if len(s) > len(a) + len(b) and s.startswith(a) and s.endswith(b):
                s = s[len(a):-len(b)].strip()
                changed = True
        unboxed = _unwrap_boxed(s)
        if unboxed != s:
            s, changed = unboxed, True
        if not changed:
            break
    s = _TEX_THIN.sub("", s)
    s = _TEX_SPACES.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = _DEGREES.sub("", s)
    s = s.strip().rstrip(".").strip()
    return re.sub(r"\s+", " ", s)


def _text_key(norm: str) -> str:
    return "t:" + _TEXT_CMD.sub(r"\1", norm).replace(" ", "")


# Fixed, "generic" values substituted for free symbols to fingerprint an expression: equal
# expressions give equal values; different ones (almost surely) do not. Two points, stable across
# processes (crc32, not hash()).
def _point(name: str, which: int) -> str:
    h = zlib.crc32(f"{which}:{name}".encode())
    return f"1.{(h % 900_000_007) + 100_000_000:09d}"


class _MathKey:
    """Canonical keys for MATH answers.

    1. The answer is normalised (``$``/``\\boxed{}`` wrappers, ``\\left``, spacing commands,
       ``\\dfrac``, degree signs) and parsed once by math-verify as ``$answer$``.
    2. The SymPy value is keyed structurally:
       - numbers: the value rounded like math-verify compares floats (6 decimals; 6 significant
         digits below 1e-3; 15 significant digits from 1e15), so 1/2, \\frac{1}{2}, 0.5 and
         \\dfrac12 share "0.5", and \\frac{\\sqrt3}{2}, \\sqrt{3}/2 share "0.866025";
       - expressions with symbols: ``f[x,y]`` and the values at two fixed generic points, so
         x^2+7x+10 and (x+2)(x+5) share a key without any pairwise simplification (the same
         value at both points means a constant: sin^2 x + cos^2 x keys as 1);
       - tuples ``(a,b)``, sets ``{a,b}`` (elements sorted), intervals ``[a,b)``, unions, matrices,
         relations, recursively; ``x = 5`` keys as ``5`` (as math-verify compares them);
    3. Words (``\\text{Evelyn}``, ``east``, a lone letter) key as lower-case text, and anything
       unparsable, too long or too costly as its normalised LaTeX (prefix ``t:``).
    """

    def __init__(self) -> None:
        import sympy  # noqa: F401 - fail here, at factory time, if missing
        from math_verify import parse
        import math_verify.parser as mv_parser

        # We bound time ourselves (_run_bounded), so math-verify's signal-based timeout is off
        # (it cannot run outside the main thread); silence its one-time warning about that.
        mv_parser.TIMEOUT_WARNING_SHOWN = True
        self._parse = parse
        self._sympy = sympy

    def __call__(self, answer: str) -> str | None:
        norm = _normalise_tex(answer)
        if not norm:
            return None
        if len(norm) > _MAX_ANSWER // 2 or _DANGEROUS.search(norm):
            return _text_key(norm)
        plain = _TEXT_CMD.sub(r"\1", norm).strip().strip("()").strip()
        if _WORDS.match(plain) and "\\" not in plain:
            return "t:" + re.sub(r"\s+", " ", plain).lower()
        key = _run_bounded(lambda: self._key_parsed(norm), _TIME_BUDGET)
        return key if key is not None else _text_key(norm)

    def _key_parsed(self, norm: str) -> str | None:
        parsed = self._parse(f"${norm}$", parsing_timeout=None)
        if not parsed:
            parsed = self._parse(norm, parsing_timeout=None)
        for item in parsed:
            if not isinstance(item, str):
                return self._key(item)
        return None

    # --- structural keys -------------------------------------------------------------------
    def _key(self, e, depth: int = 0) -> str | None:  # noqa: C901 - one dispatch table
        sp = self._sympy
        if depth > 20:
            return None
        k = lambda x: self._key(x, depth + 1)  # noqa: E731
        if isinstance(e, (list, tuple)) and not isinstance(e, sp.Basic):
            parts = [k(x) for x in e]
            return None if None in parts else "(" + ",".join(parts) + ")"
        if isinstance(e, sp.MatrixBase):
            rows = []
            for r in range(e.rows):
                parts = [k(e[r, c]) for c in range(e.cols)]
                if None in parts:
                    return None
                rows.append(",".join(parts))
            return "M[" + ";".join(rows) + "]"
        if isinstance(e, sp.Tuple):
            parts = [k(x) for x in e.args]
            return None if None in parts else "(" + ",".join(parts) + ")"
        if isinstance(e, sp.FiniteSet):
            parts = [k(x) for x in e.args]
            return None if None in parts else "{" + ",".join(sorted(set(parts))) + "}"
        if isinstance(e, sp.Interval):
            a, b = k(e.start), k(e.end)
            if a is None or b is None:
                return None
            return ("(" if e.left_open else "[") + a + "," + b + (")" if e.right_open else "]")
        if isinstance(e, sp.Union):
            parts = [k(x) for x in e.args]
            return None if None in parts else "U(" + "|".join(sorted(parts)) + ")"
        if isinstance(e, sp.Eq):
            lhs, rhs = e.args
            if isinstance(lhs, sp.Symbol) and lhs not in getattr(rhs, "free_symbols", set()):
                return k(rhs)  # "x = 5" is 5, as math-verify compares them
            if not getattr(lhs, "free_symbols", True) and not getattr(rhs, "free_symbols", True):
                return k(rhs)  # a worked computation "4 * 4 = 16" is its result
            a, b = k(lhs), k(rhs)
            return None if a is None or b is None else f"eq({a},{b})"
        if isinstance(e, sp.And) and all(isinstance(a, sp.Eq) for a in e.args):
            # a chain "2^2 * 5^2 = 4 * 25 = 100": its value when every side agrees
            sides = {k(x) for a in e.args for x in a.args}
            if len(sides) == 1 and None not in sides:
                return sides.pop()
            return "s:" + sp.srepr(e)
        if isinstance(e, sp.core.relational.Relational):
            a, b = k(e.lhs), k(e.rhs)
            return None if a is None or b is None else f"{type(e).__name__}({a},{b})"
        if isinstance(e, sp.Set):  # other sets: a stable text
            return "set:" + sp.srepr(e)
        if isinstance(e, sp.Expr):
            e = e.doit()  # math-verify builds some terms unevaluated, e.g. 10\% = 10*(1/100)
            if e.has(sp.oo, -sp.oo, sp.zoo, sp.nan) and not e.free_symbols:
                if e == sp.oo:
                    return "oo"
                if e == -sp.oo:
                    return "-oo"
                return None
            if not e.free_symbols:
                return self._number(e)
            return self._fingerprint(e)
        if isinstance(e, sp.Basic):
            return "s:" + sp.srepr(e)
        return None

    def _number(self, e) -> str | None:
        sp = self._sympy
        if isinstance(e, sp.Integer):
            return str(int(e))
        v = sp.N(e, 30)
        re_, im_ = v.as_real_imag()
        if not (re_.is_Number and im_.is_Number):
            return None
        re_s = _round_value(Decimal(str(re_)))
        im_s = _round_value(Decimal(str(im_)))
        if re_s is None or im_s is None:
            return None
        if im_s == "0":
            return re_s
        return f"{re_s}{'+' if not im_s.startswith('-') else ''}{im_s}i"

    def _fingerprint(self, e) -> str | None:
        sp = self._sympy
        syms = sorted(e.free_symbols, key=lambda s: s.name)
        values = []
        for which in (0, 1):
            subs = {s: sp.Float(_point(s.name, which), 30) for s in syms}
            v = e.evalf(30, subs=subs)
            re_, im_ = v.as_real_imag()
            if not (re_.is_Number and im_.is_Number):
                return "e:" + sp.srepr(e)
            parts = [_significant(Decimal(str(re_)), 12), _significant(Decimal(str(im_)), 12)]
            if None in parts:
                return "e:" + sp.srepr(e)
            values.append(parts[0] if parts[1] == "0" else f"{parts[0]}+{parts[1]}i")
            if which == 0:
                first = (re_, im_)
        if values[0] == values[1]:
            # the same value at two generic points: a constant in disguise (sin^2 x + cos^2 x)
            re_s = _round_value(Decimal(str(first[0])))
            im_s = _round_value(Decimal(str(first[1])))
            if re_s is not None and im_s == "0":
                return re_s
        return "f[" + ",".join(s.name for s in syms) + "]" + "|".join(values)


def _significant(d: Decimal, digits: int) -> str | None:
    """``d`` rounded to ``digits`` significant digits (half even); |d| < 1e-20 counts as 0."""
    if not d.is_finite():
        return None
    if abs(d) < Decimal("1e-20"):
        return "0"
    with localcontext() as ctx:
        ctx.prec = digits
        r = +d
    if -40 < r.adjusted() < 40:
        return _decimal_text(r)
    return format(r.normalize(), "E")


def _round_value(d: Decimal) -> str | None:
    """Round a real value the way math-verify compares numbers (see ``_MathKey``)."""
    if not d.is_finite():
        return None
    if abs(d) < Decimal("1e-25"):
        return "0"
    if abs(d) >= Decimal("1e15"):
        return _significant(d, 15)
    if abs(d) < Decimal("1e-3"):
        return _significant(d, 6)
    with localcontext() as ctx:
        ctx.prec = 60
        return _decimal_text(d.quantize(Decimal("1e-6")))


def math() -> Equivalence:
    """Symbolic equality of MATH answers via math-verify, as one canonical key per answer."""
    return Equivalence("math", _guard(_MathKey()))
