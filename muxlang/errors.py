"""User-facing errors: one type the CLI knows how to print, so no traceback reaches a user.

Anything a user can get wrong (a spec, a dataset line, a server, a store URL) raises
``MuxError`` or a subclass. The CLI prints it and exits with its ``exit_code``; any other
exception is our bug and is reported as such.

The subclasses say which part of the library refused (``StoreError``, ``BackendError``,
``DatasetError``, ``SpecError``, ``DataError``), so a caller can catch one kind. Their messages
speak of the library (a store, a backend, a dataset), never of command-line flags: the CLI catches
them and adds the flag that fixes the problem. ``Pos`` lives here too, at the bottom of the layers,
because both the syntax tree and the checked IR locate what they hold with it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Pos:
    """Where a declaration or value was written (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NOWHERE = Pos("<builtin>", 0, 0)


@dataclass
class Diagnostic:
    """One message about a place in a source file: ``FILE:LINE:COL: error: message``."""

    file: str
    line: int
    column: int
    message: str
    hint: str | None = None
    source_line: str | None = None
    severity: str = "error"

    def render(self) -> str:
        head = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        parts = [head]
        if self.source_line is not None and self.line > 0:
            text = self.source_line.rstrip("\n").expandtabs(1)
            parts.append(f"  {text}")
            parts.append("  " + " " * max(self.column - 1, 0) + "^")
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)


class MuxError(Exception):
    """A mistake of the user's, with a message fit to print. Exit status 1 unless told."""

    exit_code = 1

    def render(self) -> str:
        return f"error: {self}"


class SpecError(MuxError):
    """One or more diagnostics about spec files. Exit status 2, as compilers do."""

    exit_code = 2

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    def render(self) -> str:
        count = len(self.diagnostics)
        tail = f"{count} error{'s' if count != 1 else ''} found"
        return "\n".join([*(d.render() for d in self.diagnostics), tail])


class StoreError(MuxError):
    """The sample store cannot be opened or used.

    ``url``: the store's URL with its password hidden. ``missing``: a reader asked for a store
    that does not exist (nothing was imported or collected into it). ``opening``: the URL or the
    database is wrong (scheme, driver, path, permissions), as opposed to a failure while in use.
    """

    def __init__(self, message: str, *, url: str | None = None, missing: bool = False,
                 opening: bool = False):
        super().__init__(message)
        self.url, self.missing, self.opening = url, missing, opening


class BackendError(MuxError):
    """A backend cannot be called as configured. ``backend``: its name in the spec; ``needs``:
    what is wrong, ``"url"`` (none given), ``"kind"`` (not one the runtime calls) or ``"key"``."""

    def __init__(self, message: str, *, backend: str | None = None, needs: str | None = None):
        super().__init__(message)
        self.backend, self.needs = backend, needs


class DatasetError(MuxError):
    """A dataset is unknown to the store, does not fit the task, or cannot be read.

    ``dataset``: the name or path asked for; ``known``: the datasets the store holds, when the
    store was asked (None otherwise); ``clash``: the name is taken by other content."""

    def __init__(self, message: str, *, dataset: str | None = None,
                 known: Sequence[str] | None = None, clash: bool = False):
        super().__init__(message)
        self.dataset, self.clash = dataset, clash
        self.known = list(known) if known is not None else None


class DataError(DatasetError):
    """A bad input record or dataset file, located by file and line."""

    def __init__(self, file: str, line: int, message: str):
        self.file, self.line, self.message = file, line, message
        super().__init__(f"{file}:{line}: {message}", dataset=file)

    def render(self) -> str:
        return f"{self}"


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest known spelling, or None when nothing is close (or the name is
    too long to be a misspelling: comparing a 1M-character name would take minutes)."""
    if len(name) > 2 * ECHO_LIMIT:
        return None
    close = difflib.get_close_matches(name, sorted(c for c in set(choices)
                                                   if len(c) <= 2 * ECHO_LIMIT), n=1, cutoff=0.6)
    return f"did you mean {shorten(close[0])}?" if close else None


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` was raised while a Ctrl-C was being handled (its context chain holds a
    KeyboardInterrupt). Libraries can turn Ctrl-C into another exception this way (Optuna's trial
    loop, hit between two statements, raises UnboundLocalError from its ``finally``); to the user
    it is still the interruption they asked for, not a bug to report."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


ECHO_LIMIT = 80  # characters of a user's value an error message repeats


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as an error message echoes it: its ``repr`` for strings (quotes and escapes
    show what was written), cut to about ``limit`` characters with the full length said, so a
    1M-character id or model name never floods a terminal or a log. Every message that repeats
    a value the user gave (an id, a model name, a dataset name) goes through here."""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:limit]}… ({size:,} characters)"
