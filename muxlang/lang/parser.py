"""Text → AST. The Lark parser is built once per process and cached; Lark's exceptions become
``SpecError`` diagnostics with the file, line, column and a hint, never a traceback.
"""
from __future__ import annotations

import ast as pyast
import bisect
import functools
import re
import textwrap
import warnings
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from muxlang.errors import Diagnostic, SpecError
from muxlang.errors import Pos
from muxlang.lang import ast

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# How a terminal reads in a message.
_TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LONG_STRING": "a string",
    "DURATION": "a duration", "RATE": "a rate", "SIZE": "a size", "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='",
    "COMMA": "','", "STAR": "'*'", "DOT": "'.'", "IMPORT": "'import'", "TRUE": "'true'",
    "FALSE": "'false'", "$END": "end of file", "__ANON_0": "'..'",
}


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(
        _GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=True,  # the LALR tables, pickled in the temp dir: check starts in a few ms
    )


# Lists and calls nested deeper than this are refused. No spec needs more than two or three
# levels, and the tree → AST transformer recurses once per level: without a limit a few hundred
# '[' would end in a RecursionError instead of a message.
MAX_NESTING = 32


# After this many syntax errors in one file, stop looking for more.
MAX_SYNTAX_ERRORS = 20


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse one file's text. Raises SpecError listing its syntax errors, one per declaration.

    After a syntax error the declaration holding it is blanked out (newlines kept, so every
    position stays right) and the file is parsed again, so one run reports the mistakes of every
    declaration, as the checker does for meaning, instead of only the first."""
    diagnostics: list[Diagnostic] = []
    current = text
    while True:
        try:
            tree = _lark().parse(current)
            break
        except UnexpectedInput as error:
            found = _diagnostic(error, current, path)
            found.source_line = _line(text, found.line)
            diagnostics.append(found)
            current = (_without_failed_declaration(current, error)
                       if len(diagnostics) < MAX_SYNTAX_ERRORS else None)
            if current is None:
                break
    if diagnostics:
        raise SpecError(diagnostics)
    too_deep = _first_too_deep(tree)
    if too_deep is not None:
        raise SpecError([Diagnostic(
            path, too_deep.line, too_deep.column,
            f"lists and calls are nested more than {MAX_NESTING} deep",
            "a value needs at most a list of calls or names", _line(text, too_deep.line))])
    return _ToAst(path, text).transform(tree)


# A line that starts a declaration ("model m {") or an import; groups: the kind, the name.
_DECL_START = re.compile(r"[ \t]*(?:import\b|([A-Za-z_][\w-]*)[ \t]+([A-Za-z_][\w-]*)[ \t]*\{)")


def _in_long_string_after(line: str, inside: bool) -> bool:
    """Whether a triple-quoted string is still open at the end of ``line``, given whether one
    was open at its start. Follows the lexer: '#' starts a comment and '"' a short string only
    outside strings."""
    i = 0
    while i < len(line):
        if inside:
            close = line.find('"""', i)
            if close < 0:
                return True
            inside, i = False, close + 3
        elif line.startswith('"""', i):
            inside, i = True, i + 3
        elif line[i] == "#":
            return False
        elif line[i] == '"':
            short = _SHORT_STRING.match(line, i)
            i = short.end() if short else len(line)
        else:
            i += 1
    return inside


_SHORT_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _declaration_lines(text: str) -> tuple[list[int], list[int]]:
    """Offsets of every line start, and the indexes of the lines that start a declaration.

    Lines inside a triple-quoted string are skipped: a prompt line such as "Reply with {x}"
    is not a declaration."""
    starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
    declarations = []
    inside = False
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        line = text[start:end]
        if not inside and _DECL_START.match(line):
            declarations.append(index)
        inside = _in_long_string_after(line, inside)
    return starts, declarations


_TOP_LEVEL = {"decl", "import_stmt", "__start_star_0"}  # completed items on the parser stack


def _failed_item_start(error: UnexpectedInput, offset: int) -> int | None:
    """Offset where the top-level item that failed began: the first thing on the LALR value stack
    that is not a completed declaration or import; ``offset`` (the error's) when nothing is
    pending. None when lark does not say."""
    parser = getattr(error, "interactive_parser", None)
    stack = getattr(getattr(parser, "parser_state", None), "value_stack", None)
    if stack is None:
        return None
    for value in stack:
        if isinstance(value, Tree) and value.data in _TOP_LEVEL:
            continue
        if isinstance(value, Token):
            return value.start_pos
        if isinstance(value, Tree) and not value.meta.empty:
            return value.meta.start_pos
        return None
    return offset  # nothing pending: the failing item starts at the error itself


def _without_failed_declaration(text: str, error: UnexpectedInput) -> str | None:
    """``text`` with the declaration that holds ``error`` replaced by blanks, or None when
    parsing cannot usefully go on (the error is at the end of the file, or nothing is left to
    skip).

    The blanked part runs from where the failing item began (from the parser's own stack, so a
    stray word before a declaration goes too) to the next line that starts a declaration. When
    the error is the NAME of a "KIND NAME {" line, the block above was never closed: the part
    ends just before that line, so the declaration is parsed afresh."""
    if isinstance(error, UnexpectedEOF) or (
            isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        return None
    offset = getattr(error, "pos_in_stream", None)
    if offset is None or offset < 0:
        return None
    starts, declarations = _declaration_lines(text)
    line = bisect.bisect_right(starts, offset) - 1
    before = [d for d in declarations if d <= line]
    after = [d for d in declarations if d > line]
    begin = _failed_item_start(error, offset)
    if begin is None or begin > offset:
        begin = starts[before[-1]] if before else 0
    end = starts[after[0]] if after else len(text)
    if (isinstance(error, UnexpectedToken) and _opens_declaration(text, error.token)
            and begin < starts[line]):
        end = starts[line]
    if not text[begin:end].strip():
        return None
    blank = re.sub(r"[^\r\n]", " ", text[begin:end])
    return text[:begin] + blank + text[end:]


def _first_too_deep(tree: Tree):
    """The position (lark ``Meta``) of the first list or call nested over ``MAX_NESTING`` deep.

    Iterative on purpose: this runs before the recursive transformer, on any input."""
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("list", "call"):
            depth += 1
            if depth > MAX_NESTING:
                return node.meta
        stack.extend((child, depth) for child in reversed(node.children)
                     if isinstance(child, Tree))
    return None


def _token_name(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    if name.startswith("__ANON"):
        return "'..'"
    return name.lower()


_VALUE_START = {"STRING", "LONG_STRING", "NUMBER", "DURATION", "RATE", "NAME", "LSQB"}


def _expected(names: set[str]) -> str:
    if _VALUE_START <= names:
        return "a value (a string, number, name, call, or [list])"
    readable = sorted({_token_name(n) for n in names})
    if len(readable) > 6:
        readable = readable[:6] + ["..."]
    return ", ".join(readable)


def _line(text: str, line: int) -> str | None:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _end_position(text: str) -> tuple[int, int]:
    lines = text.splitlines() or [""]
    if text.endswith(("\n", "\r")):
        return len(lines) + 1, 1
    return len(lines), len(lines[-1]) + 1


def _stack(error: UnexpectedInput) -> list:
    """The LALR value stack at the error (tokens and reduced trees), [] when lark does not say."""
    parser = getattr(error, "interactive_parser", None)
    return list(getattr(getattr(parser, "parser_state", None), "value_stack", None) or [])


def _last_token(value) -> Token | None:
    """The last token of a stack value: the value itself, or the rightmost leaf of a tree."""
    while isinstance(value, Tree):
        if not value.children:
            return None
        value = value.children[-1]
    return value if isinstance(value, Token) else None


def _position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


# Names people write for the units a duration takes (ms, s, m, h).
_UNIT_SPELLINGS = {
    "ms": ("msec", "msecs", "millis", "millisecond", "milliseconds"),
    "s": ("sec", "secs", "second", "seconds", "S"),
    "m": ("min", "mins", "minute", "minutes", "M"),
    "h": ("hr", "hrs", "hour", "hours", "H"),
}
_SIZE_OF = {"b": "B", "kb": "KB", "mb": "MB", "gb": "GB", "kib": "KiB", "mib": "MiB",
            "gib": "GiB", "k": "KB", "g": "GB", "bytes": "B", "byte": "B"}
_UNIT_OF = {spelling: unit for unit, spellings in _UNIT_SPELLINGS.items() for spelling in spellings}


def _glued_unit(error: UnexpectedInput, text: str) -> Diagnostic | None:
    """A number with an unknown unit glued to it (``30sec``): the lexer reads a number and a name,
    and the parser only trips over what follows. Said at the number, naming the unit."""
    stack = _stack(error)
    candidates = []
    token = getattr(error, "token", None)
    # (in a pool, `m * 3x` is a bad sample count, not a unit: left to the general message)
    if (isinstance(token, Token) and token.type == "NAME" and stack
            and not (isinstance(stack[-1], Tree) and stack[-1].data == "member")):
        candidates.append((_last_token(stack[-1]), token))
    if len(stack) >= 2 and isinstance(stack[-1], Token) and stack[-1].type == "NAME":
        candidates.append((_last_token(stack[-2]), stack[-1]))
    for number, name in candidates:
        if (number is None or number.type != "NUMBER" or number.end_pos is None
                or number.end_pos != name.start_pos):
            continue
        line, column = _position(text, number.start_pos)
        unit = _UNIT_OF.get(str(name))
        size = _SIZE_OF.get(str(name).lower())
        if size is not None:
            hint = f"sizes are written in B, KB, MB, GB, KiB, MiB or GiB: write {number}{size}"
        elif unit is not None:
            hint = f"units are ms, s, m, h: write {number}{unit}"
        else:
            hint = f"units are ms, s, m, h (e.g. {number}s); a rate is written {number}/s"
        return Diagnostic("", line, column, f"unknown unit '{name}' in '{number}{name}'", hint)
    return None


_RATE_UNIT = re.compile(r"/([A-Za-z_][\w-]*)")


def _bad_rate_unit(error: UnexpectedCharacters, text: str) -> Diagnostic | None:
    """``50/sec``: a number, then a '/' the lexer cannot place."""
    stack = _stack(error)
    number = _last_token(stack[-1]) if stack else None
    if (number is None or number.type != "NUMBER" or number.end_pos != error.pos_in_stream
            or text[error.pos_in_stream:error.pos_in_stream + 1] != "/"):
        return None
    unit = _RATE_UNIT.match(text, error.pos_in_stream)
    written = unit.group(1) if unit else ""
    line, column = _position(text, number.start_pos)
    fixed = _UNIT_OF.get(written, written if written in ("s", "m", "h") else None)
    hint = (f"rates are per s, m or h: write {number}/{fixed}" if fixed in ("s", "m", "h")
            else f"rates are per s, m or h: write e.g. {number}/s")
    return Diagnostic("", line, column, f"unknown rate unit in '{number}/{written}'", hint)


# After a name in value position, these characters mean an unquoted string (a URL, a path, a
# dotted model id): `url = http://127.0.0.1:8000/v1`.
_UNQUOTED_AFTER_NAME = (":", "/", ".")
_VALUE_OPENERS = {"EQUAL", "LPAR", "COMMA", "LSQB"}
_UNQUOTED_WORD = re.compile(r'[^\s,()\[\]{}#"]+')


def _unquoted_string(error: UnexpectedInput, text: str) -> str | None:
    """The hint for a string written without quotes, or None when the error is something else."""
    offset = getattr(error, "pos_in_stream", None)
    if offset is None or offset < 0 or text[offset:offset + 1] not in _UNQUOTED_AFTER_NAME:
        return None
    stack = _stack(error)
    if len(stack) < 2:
        return None
    name, before = stack[-1], stack[-2]
    if not (isinstance(name, Token) and name.type == "NAME" and name.end_pos == offset
            and isinstance(before, Token) and before.type in _VALUE_OPENERS):
        return None
    word = _UNQUOTED_WORD.match(text, name.start_pos)
    shown = word.group(0) if word else str(name)
    return f'quote the string: write "{shown}"'


def _diagnostic(error: UnexpectedInput, text: str, path: str) -> Diagnostic:
    found = _glued_unit(error, text)
    if found is None and isinstance(error, UnexpectedCharacters):
        found = _bad_rate_unit(error, text)
    if found is not None:
        found.file, found.source_line = path, _line(text, found.line)
        return found
    line, column = getattr(error, "line", -1), getattr(error, "column", -1)
    hint = None
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        line, column = _end_position(text)
        message = "unexpected end of file"
        expected = set(getattr(error, "expected", ()) or ())
        if "RBRACE" in expected:
            hint = "a block is not closed: add '}'"
        elif "RSQB" in expected:
            hint = "a list is not closed: add ']'"
        elif expected:
            hint = f"expected {_expected(expected)}"
    elif isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        if char == ";":
            message = "unexpected ';'"
            hint = "no ';' is needed: write one 'key = value' per line"
        elif char == '"':
            message = "unterminated string"
            hint = 'close the string with " on the same line, or use """ for text over several lines'
        else:
            message = f"unexpected character {char!r}"
            allowed = set(error.allowed or ())
            hint = _unquoted_string(error, text)
            if hint is None and allowed:
                hint = f"expected {_expected(allowed)}"
    else:
        assert isinstance(error, UnexpectedToken)
        token: Token = error.token
        shown = token.value if len(token.value) <= 20 else token.value[:20] + "..."
        kind = _token_name(token.type)
        if kind.startswith("'"):
            message = f"unexpected {kind}"
        else:
            message = f"unexpected {kind.removeprefix('a ')} '{shown}'"
        expected = set(error.accepts or error.expected or ())
        hint = _unquoted_string(error, text) or _hint_for(token, expected)
        if _opens_declaration(text, token):
            hint = "the block above is not closed: add '}' before this declaration"
    if line < 1:
        line, column = _end_position(text)
    return Diagnostic(path, line, column, message, hint, _line(text, line))


def _opens_declaration(text: str, token: Token) -> bool:
    """Whether ``token`` is the NAME of a "KIND NAME {" line: met where a key was expected, it
    means the previous block is missing its closing brace."""
    if token.type != "NAME" or token.start_pos is None:
        return False
    line_start = text.rfind("\n", 0, token.start_pos) + 1
    header = _DECL_START.match(text, line_start)
    return bool(header and header.group(2) and header.start(2) == token.start_pos)


def _hint_for(token: Token, expected: set[str]) -> str:
    if expected == {"EQUAL"}:
        return "write 'key = value'"
    if "RBRACE" in expected and "NAME" in expected and token.type != "NAME":
        return "inside a block, write one 'key = value' per line, and close it with '}'"
    if "LBRACE" in expected:
        return "a declaration reads 'KIND NAME { ... }'"
    if "COMMA" in expected and ("RSQB" in expected or "RPAR" in expected):
        return "separate items with ','"
    return f"expected {_expected(expected)}"


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# sizes: decimal (KB = 1000 bytes) and binary (KiB = 1024 bytes) units
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20,
              "GiB": 2**30}


def _unescape(raw: str) -> str:
    """A double-quoted literal's value; backslash escapes as in Python, unknown ones kept.

    Unknown escapes ("\\d" in a regex) make Python warn (a SyntaxWarning printed on stderr from
    3.12 on, an error under -W error): silenced, so the value never depends on warning filters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pyast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw[1:-1]


def _long_string(raw: str) -> str:
    # A file saved with CRLF (or old-Mac CR) line ends must give the same prompt as one with LF.
    body = raw[3:-3].replace("\r\n", "\n").replace("\r", "\n")
    lines = body.split("\n")
    if lines and not lines[0].strip():
        lines = lines[1:]
    if lines and not lines[-1].strip():
        lines = lines[:-1]
    return textwrap.dedent("\n".join(lines))


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree → typed AST nodes, each with its position and span."""

    def __init__(self, path: str, text: str):
        super().__init__(visit_tokens=False)
        self.path = path
        self.text = text

    def _at(self, meta) -> dict:
        return {"pos": Pos(self.path, meta.line, meta.column), "start": meta.start_pos,
                "end": meta.end_pos}

    def _tok(self, token: Token) -> dict:
        return {"pos": Pos(self.path, token.line, token.column), "start": token.start_pos,
                "end": token.end_pos}

    def start(self, meta, items):
        module = ast.Module(self.path, self.text)
        for item in items:
            (module.imports if isinstance(item, ast.Import) else module.decls).append(item)
        return module

    def import_stmt(self, meta, children):
        (target,) = children
        if isinstance(target, ast.Str):
            return ast.Import(**self._at(meta), target=target.value, is_file=True)
        return ast.Import(**self._at(meta), target=target, is_file=False)

    def module_name(self, meta, names):
        return ".".join(str(n) for n in names)

    def decl(self, meta, children):
        kind, name, *attrs = children
        return ast.Decl(**self._at(meta), kind=str(kind), kind_pos=self._tok(kind)["pos"],
                        name=str(name), name_pos=self._tok(name)["pos"], attrs=attrs)

    def attr(self, meta, children):
        key, value = children
        return ast.Attr(**self._at(meta), key=str(key), key_pos=self._tok(key)["pos"], value=value)

    def string(self, meta, children):
        (token,) = children
        raw = str(token)
        value = _long_string(raw) if token.type == "LONG_STRING" else _unescape(raw)
        return ast.Str(**self._at(meta), value=value)

    def number(self, meta, children):
        (token,) = children
        return ast.Num(**self._at(meta), value=_number(str(token)), text=str(token))

    def duration(self, meta, children):
        text = str(children[0])
        unit = "ms" if text.endswith("ms") else text[-1]
        seconds = float(text[: -len(unit)]) * _UNITS[unit]
        return ast.Duration(**self._at(meta), seconds=seconds, text=text)

    def rate(self, meta, children):
        text = str(children[0])
        count, unit = text.split("/")
        return ast.Rate(**self._at(meta), per_second=float(count) / _UNITS[unit], text=text)

    def size(self, meta, children):
        text = str(children[0])
        number = text.rstrip("BKMGi")
        scale = SIZE_UNITS[text[len(number):]]
        return ast.Size(**self._at(meta), bytes=int(float(number) * scale), text=text)

    def range(self, meta, children):
        low, high = (ast.Num(**self._tok(t), value=_number(str(t)), text=str(t)) for t in children)
        return ast.Range(**self._at(meta), low=low, high=high)

    def true(self, meta, children):
        return ast.Bool(**self._at(meta), value=True)

    def false(self, meta, children):
        return ast.Bool(**self._at(meta), value=False)

    def ref(self, meta, children):
        return ast.Ref(**self._at(meta), name=str(children[0]))

    def call(self, meta, children):
        name, *args = children
        return ast.Call(**self._at(meta), name=str(name), args=[a for a in args if a is not None])

    def positional(self, meta, children):
        return ast.Arg(**self._at(meta), name=None, value=children[0])

    def keyword(self, meta, children):
        name, value = children
        return ast.Arg(**self._at(meta), name=str(name), value=value)

    def list(self, meta, children):
        return ast.List(**self._at(meta), items=[c for c in children if c is not None])

    def member(self, meta, children):
        name, count = children
        ref = ast.Ref(**self._tok(name), name=str(name))
        number = ast.Num(**self._tok(count), value=_number(str(count)), text=str(count))
        return ast.Member(**self._at(meta), ref=ref, count=number)
