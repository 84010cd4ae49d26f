"""Extractors: model text → answer text (or None when no answer can be read).

Every name in ``registry.EXTRACTORS`` is a factory ``f(**args) -> Callable[[str], str | None]``.
The factories validate their arguments (raising ``MuxError``) and compile what they need once; the
returned callables never raise, whatever the text (empty, garbage, huge, not even a string): an
answer that cannot be read is ``None``, which the selection rules count as an unparseable sample.

Design notes
- "Last occurrence wins" everywhere: models restate the question, list options and correct
  themselves before the final answer, so the last marked answer is the one they settled on.
- Extractors return the answer *as written* minus obvious decoration (``$``, thousands commas,
  units); canonicalising ("18.00" = "18") is the job of the equivalence rules.
"""
from __future__ import annotations

import json
import re
from typing import Callable

from muxlang.stdlib import arguments

Extractor = Callable[[str], "str | None"]

# Texts longer than this are only looked at in their last part: answers come at the end, and it
# keeps every extractor linear and bounded on pathological inputs.
_MAX_CHARS = 200_000


def _tail(text: str) -> str:
    return text[-_MAX_CHARS:] if len(text) > _MAX_CHARS else text


def _safe(fn: Callable[[str], "str | None"]) -> Extractor:
    """Wrap an extractor so it returns None instead of raising, and only on str input."""

    def run(text: str) -> str | None:
        if not isinstance(text, str) or not text:
            return None
        try:
            out = fn(_tail(text))
        except Exception:  # noqa: BLE001 - an extractor must never raise on model text
            return None
        if out is None:
            return None
        out = out.strip()
        return out or None

    run.__name__ = getattr(fn, "__name__", "extractor")
    run.__doc__ = fn.__doc__
    return run


# --------------------------------------------------------------------------------------------
# Numbers

# A number as models write it: optional sign, optional (escaped) dollar sign, thousands commas,
# decimals. The sign may come before or after the dollar sign ("-$10,000", "$-5"). A minus that
# directly follows a letter, digit or closing bracket is a binary minus ("10-5"), and so is one
# followed by a space ("12 - 4"): neither is a sign.
# a number, with an exponent written right after it ("1e-05", "2.14e+30", "3.5E6")
_NUM_CORE = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+(?!\w))?"
_NUMBER = re.compile(
    r"(?<![\w.)\]}])(?P<sign1>[-−–])?(?:\\?\$\s?)?(?P<sign2>[-−])?"
    r"(?<![\d.,])(?P<num>" + _NUM_CORE + r")(?![\d])"
)


def _number_text(m: re.Match) -> str:
    sign = "-" if (m.group("sign1") or m.group("sign2")) else ""
    return sign + m.group("num").replace(",", "")


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return _number_text(last) if last is not None else None


# "#### 18", "####  $1,234.00", "#### -5"
_HASHES = re.compile(r"####+\s*(?P<body>[^\n]{0,80})")
# "The answer is 18", "final answer is: $18", "Answer: **18**", "answer = \boxed{18}"
_ANSWER_IS = re.compile(
    r"\banswer\b\s*(?:\*\*\s*)?(?:is|:|=|is\s*:)\s*(?P<body>[^\n]{0,80})", re.IGNORECASE
)
# What may stand between an answer marker and the number it announces.
_LEAD = re.compile(
    r"(?:\s|\*|:|\$|\\\$|\\\(|\\\[|\(|\[|\\boxed\{|\\fbox\{|\\text\{|\\textbf\{|\\mathbf\{"
    r"|approximately|about|therefore|thus|so|then|that)*",
    re.IGNORECASE,
)
_FRAC_TEX = re.compile(r"^\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_FRAC_TEX_SHORT = re.compile(r"^\\[dt]?frac\s*(\d)(\d)(?!\d)")
_FRAC_PLAIN = re.compile(r"^(-?\d+)\s*/\s*(\d+)(?![\d.])")


def _number_at_start(body: str) -> str | None:
    """The number that directly follows an answer marker, or None when something else does."""
    lead = _LEAD.match(body)
    rest = body[lead.end():] if lead else body
    for pat in (_FRAC_TEX, _FRAC_TEX_SHORT):
        m = pat.match(rest)
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    m = _FRAC_PLAIN.match(rest)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    m = _NUMBER.match(rest)
    if m is None:
        return None
    return _number_text(m)


_TEX_NOISE = re.compile(
    r"\\(?:text|mathrm|textbf|mathbf|mbox)\s*\{[^{}]*\}|\\[,;:! ]|\\%|%|\\\$|\$|\^\s*\{?\\circ\}?"
    r"|\\left|\\right|\\quad"
)
_NUMERIC_ONLY = re.compile(r"^\s*(-?)\s*(" + _NUM_CORE + r")\s*\.?\s*$")


def _numeric_boxed(content: str) -> str | None:
    """A number for boxed content that is just a number (with units/dollars/percent), else None."""
    cleaned = _TEX_NOISE.sub(" ", content).strip()
    cleaned = re.sub(r"\b(?:dollars?|cents?|units?|[a-zA-Z]{1,3})\s*$", "", cleaned).strip()
    for pat in (_FRAC_TEX, _FRAC_TEX_SHORT, _FRAC_PLAIN):
        m = pat.match(cleaned)
        if m and m.end() == len(cleaned):
            return f"{m.group(1)}/{m.group(2)}"
    m = _NUMERIC_ONLY.match(cleaned)
    if m is None:
        return None
    return m.group(1) + m.group(2).replace(",", "")


def _final_number(text: str) -> str | None:
    """The final numeric answer of a solution."""
    # 0. the whole text is one number ("2/3", "$18", "18 dollars", "\\frac{3}{4}").
    if len(text) <= 60:
        n = _numeric_boxed(text)
        if n is not None:
            return n
    # 1. a '#### N' line (GSM8K style); the last one wins.
    for m in reversed(list(_HASHES.finditer(text))):
        n = _number_at_start(m.group("body"))
        if n is not None:
            return n
    # 2. 'The answer is N' / 'final answer is N' / 'Answer: N'.
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        n = _number_at_start(m.group("body"))
        if n is not None:
            return n
    # 3. the last \boxed{} when its content is a number.
    content = _last_boxed(text)
    if content is not None:
        n = _numeric_boxed(content)
        if n is not None:
            return n
    # 4. the last number anywhere.
    return _last_number(text)


def final_number() -> Extractor:
    """'#### N', then 'The answer is N', then a numeric last \\boxed{}, else the last number."""
    return _safe(_final_number)


# --------------------------------------------------------------------------------------------
# \boxed{}

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{|\\boxed\s+(?=[^\s{])")


def _balanced(text: str, start: int, stop: int) -> str | None:
    """Content from ``start`` (just after an opening brace) to its matching closing brace, if
    that brace comes before ``stop``."""
    depth = 1
    i = start
    while i < stop:
        c = text[i]
        if c == "\\":  # an escaped brace \{ \} does not count
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


_MAX_BOXES = 100


def _last_boxed(text: str) -> str | None:
    starts = list(_BOX_START.finditer(text))[-_MAX_BOXES:]
    # A box that does not close before the end cannot help an earlier box close after it, so
    # each earlier box is only scanned up to the start of the last unclosed one: linear time.
    stop = len(text)
    for m in reversed(starts):
        if m.group(0).endswith("{"):
            content = _balanced(text, m.end(), stop)
            if content is not None:
                return content.strip()
            stop = m.start()
        else:  # "\boxed 5": the next token
            tok = re.match(r"[^\s$]+", text[m.end():m.end() + 200])
            if tok:
                return tok.group(0)
    return None


def boxed() -> Extractor:
    """The content of the last \\boxed{...} or \\fbox{...}, nested braces kept."""
    return _safe(_last_boxed)


# --------------------------------------------------------------------------------------------
# Multiple-choice letters


def choice_letter(letters: str = "ABCD") -> Extractor:
    """A choice letter: explicit answer markers first (last one wins), else a letter at the end."""
    uniq = arguments.choice_letter(letters)
    cls = "[" + re.escape(uniq) + "]"
    # After a bare letter: end, punctuation, markup or a line break. A bare letter followed by a
    # word ("A train leaves", "I think") is an article/pronoun, unless the word is a verb or
    # conjunction typical of an answer ("C is correct", "B because ...").
    after = (
        r"(?=\s*$|\s*[.,;:!?)\]}*#\"'`$\\\n]|\s*-|\s+(?i:is|because|since|as|which|would|should"
        r"|seems|appears|and|or|with|for)\b|\s+\()"
    )
    letter = (
        r"(?:\(\s*(?P<p>" + cls + r")\s*\)|\[\s*(?P<b>" + cls + r")\s*\]"
        r"|(?P<l>" + cls + r")(?:\s*\)|" + after + r"))"
    )
    # bounded and possessive: no quadratic or exponential scans of "\boxed{\boxed{...", "** ** **"
    markup = (r"\s*+(?:(?:[*_#:]|\$|\\\(|\\\[|\\boxed\{|\\text\{|\\textbf\{|\\mathrm\{|\{)"
              r"\s*+){0,8}+")
    marker = (
        r"(?i:\banswer\b\s*(?:\*\*|__)?\s*(?:is|:|=|is\s*:|would\s+be|should\s+be|must\s+be"
        r"|will\s+be|is\s+therefore|therefore\s+is)"
        r"|\bcorrect\s+(?:option|choice|letter|answer)\s+(?:is|would\s+be|:)"
        r"|\b(?:final|best)\s+(?:option|choice)\s*(?:is|:)"
        r"|\\boxed\{)"
    )
    explicit = re.compile(marker + markup + letter)
    # Fallbacks on the last non-empty line: "(C)", "**C**", "C.", "Option C", "C) 42".
    last_line = re.compile(
        r"^\W*(?:(?i:option|choice)\s*)?(?:\(\s*(?P<p>" + cls + r")\s*\)|(?P<l>" + cls + r"))"
        r"(?:\W*$|\s*\)\s*\S.*$)"
    )
    line_end = re.compile(r"\(\s*(?P<p>" + cls + r")\s*\)\W*$")

    def pick(m: re.Match) -> str | None:
        for g in ("p", "b", "l"):
            v = m.groupdict().get(g)
            if v:
                return v
        return None

    def extract(text: str) -> str | None:
        last = None
        for last in explicit.finditer(text):
            pass
        if last is not None:
            return pick(last)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return None
        tail = lines[-1].strip()
        m = last_line.match(tail)
        if m is not None:
            return pick(m)
        m = line_end.search(tail)
        if m is not None:
            return pick(m)
        return None

    return _safe(extract)


# --------------------------------------------------------------------------------------------
# JSON fields

# JSON allows \" \\ \/ \b \f \n \r \t \uXXXX. Models writing LaTeX inside JSON strings often
# leave single backslashes: "\frac" would decode as form feed + "rac", "\sqrt" is an error. Double
# every backslash that starts LaTeX rather than a JSON escape; keep real escapes ("\n\nThe").
_ESCAPE = re.compile(
    r"\\(?:(?P<keep>u[0-9a-fA-F]{4}|[\"\\/]|[bfrt](?![a-zA-Z])"
    r"|n(?!e|u|ot|abla|i(?![a-z])|mid|leq|geq|eg|parallel|subset|sim|cong))|(?P<other>.|$))",
    re.DOTALL,
)


def _fix_escapes(text: str) -> str:
    def repl(m: re.Match) -> str:
        if m.group("keep") is not None:
            return m.group(0)
        return "\\\\" + m.group("other")

    return _ESCAPE.sub(repl, text)


_OBJ_START = re.compile(r"\{\s*\"")
_MAX_CANDIDATES = 64
_DECODER = json.JSONDecoder(strict=False)


def _json_objects(text: str) -> list[tuple[int, int, dict]]:
    """Top-level JSON objects in the text as (start, end, object), in order.

    At most ``_MAX_CANDIDATES`` failed decoding attempts are made, so the cost stays linear.
    """
    found: list[tuple[int, int, dict]] = []
    pos = 0
    tries = 0
    while tries < _MAX_CANDIDATES:
        m = _OBJ_START.search(text, pos)
        if m is None:
            break
        try:
            value, end = _DECODER.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            tries += 1  # failures are bounded; successes consume the text
            pos = m.start() + 1
            continue
        if isinstance(value, dict):
            found.append((m.start(), end, value))
        pos = max(end, m.start() + 1)
    return found


_PLACEHOLDER = re.compile(r"^[\s_.…<>-]*$|^\s*(?:\.\.\.|<[^<>]*>|your answer here)\s*$", re.I)


def _placeholder(value: object) -> bool:
    """A template's blank ("___", "...", "<answer>"): models that echo the prompt write these."""
    return isinstance(value, str) and bool(_PLACEHOLDER.match(value))


def _field_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def json_field(field: str = "answer", then: str | None = None) -> Extractor:
    """The field of the (last) JSON object in the text that has it, as text.

    ``then`` names another extractor applied to the field's text ("final_number", "boxed", ...);
    when it reads nothing, the field's text itself is returned.
    """
    arguments.json_field(field, then)
    post: Extractor | None = None
    if then is not None:
        from muxlang.stdlib.registry import EXTRACTORS

        post = EXTRACTORS[then].load()()

    key = re.escape(json.dumps(field)[1:-1])
    # '"answer":', also with a lost opening quote; not the `"answer": "42"` example of an echoed
    # prompt (inside backticks).
    name = r'(?:(?<!`)"' + key + r'"|(?<![`"\w])' + key + r'")'
    name_colon = re.compile(name + r'\s*:')
    quoted = re.compile(name + r'\s*:\s*"(?P<s>(?:[^"\\]|\\.)*)"', re.DOTALL)
    # An unescaped quote inside the value: take everything up to the quote that ends the line or
    # the object.
    loose = re.compile(name + r'\s*:\s*"(?P<s>.{0,4000}?)"\s*(?:,\s*"|\}|\n|$)', re.DOTALL)
    bare = re.compile(name + r'\s*:\s*(?P<v>[^\s",}\]][^,}\n]*)')

    def loose_field(text: str, start: int = 0) -> str | None:
        """The last '"field": ...' from ``start`` on, for objects no decoder accepts.

        Only the last ``_MAX_CANDIDATES`` occurrences are tried, each anchored, so this stays
        linear in the text."""
        spots = [m.start() for m in name_colon.finditer(text, start)][-_MAX_CANDIDATES:]
        for pos in reversed(spots):
            for pat, grp in ((quoted, "s"), (loose, "s"), (bare, "v")):
                m = pat.match(text, pos)
                if m is None:
                    continue
                raw = m.group(grp)
                if _placeholder(raw):
                    break  # a prompt template echoed back ('"answer": "___"'): look before it
                if grp == "s":
                    try:
                        raw = json.loads('"' + _fix_escapes(raw) + '"', strict=False)
                    except ValueError:
                        pass
                return raw
        return None

    def raw_field(text: str) -> str | None:
        fixed = _fix_escapes(text)
        # Escapes fixed for LaTeX first, the text as written second.
        for variant in (fixed, text):
            objs = [(end, obj) for _, end, obj in _json_objects(variant)
                    if field in obj and not _placeholder(obj[field])]
            if objs:
                end, obj = objs[-1]
                # A later '"field":' in a broken object (e.g. an unterminated string) wins.
                later = loose_field(variant, end)
                return later if later is not None else _field_text(obj[field])
        return loose_field(fixed)

    def extract(text: str) -> str | None:
        value = raw_field(text)
        if value is None or not value.strip():
            return None
        if post is not None:
            out = post(value)
            if out is not None:
                return out
        return value

    return _safe(extract)


# --------------------------------------------------------------------------------------------
# Regular expressions


def regex(pattern: str, group: int = 1) -> Extractor:
    """The given group of the last match of ``pattern`` (Python ``re`` syntax)."""
    compiled = arguments.regex(pattern, group)

    def extract(text: str) -> str | None:
        last = None
        for last in compiled.finditer(text):
            pass
        return last.group(group) if last is not None else None

    return _safe(extract)
