"""Files → parsed modules, imports followed: the one place that touches the file system.

A spec file may import stdlib modules (``import std.gsm8k``) and other spec files by path relative
to the importing file; only ``.mux`` files (anything else is refused unread, so that a spec cannot
echo ``/etc/passwd`` or a ``.env`` file in a diagnostic). Modules come back in dependency order
(imports before importers), each loaded once however many files import it. Unreadable files,
binary files, bad encodings, missing imports and import cycles are diagnostics, never tracebacks.
"""
from __future__ import annotations

import os
from pathlib import Path

from muxlang.errors import Diagnostic, SpecError, did_you_mean
from muxlang.lang import ast
from muxlang.lang.parser import parse

STD_PREFIX = "std."
SPEC_SUFFIX = ".mux"  # the only files an import loads


def _shown(path: str) -> str:
    """An import's path for a message: at most 120 characters."""
    return path if len(path) <= 120 else path[:117] + "..."


def _position_of_offset(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return line, column


def read_source(path: str | os.PathLike) -> str:
    """The text of a spec file, or a SpecError saying plainly why it cannot be read."""
    name = str(path)

    def fail(message: str, line: int = 1, column: int = 1, hint: str | None = None):
        raise SpecError([Diagnostic(name, line, column, message, hint)])

    target = Path(path)
    if target.is_dir():
        fail("is a directory, not a spec file", hint="give the path of a .mux file")
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        fail("no such file")
    except OSError as error:
        fail(f"cannot read: {error.strerror or error}")
    if b"\0" in data:
        line, column = _position_of_offset(data, data.index(b"\0"))
        fail("binary file: a spec is text", line, column)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, column = _position_of_offset(data, error.start)
        fail(f"not valid UTF-8 (byte 0x{data[error.start]:02x})", line, column,
             "save the file as UTF-8")
    raise AssertionError("unreachable")  # pragma: no cover


def parse_file(path: str | os.PathLike) -> ast.Module:
    return parse(read_source(path), str(path))


class Loader:
    """Loads a root file and everything it imports, in dependency order."""

    def __init__(self) -> None:
        self.modules: dict[str, ast.Module] = {}  # resolved path -> module, in load order
        self.diagnostics: list[Diagnostic] = []
        self._stack: list[str] = []

    def load(self, path: str | os.PathLike) -> list[ast.Module]:
        self._load(str(path), importer=None)
        if self.diagnostics:
            raise SpecError(self.diagnostics)
        return list(self.modules.values())

    def _key(self, path: str) -> str:
        return str(Path(path).resolve())

    def _load(self, path: str, importer: ast.Import | None) -> None:
        key = self._key(path)
        if key in self.modules:
            return
        if key in self._stack:
            cycle = self._stack[self._stack.index(key):] + [key]
            shown = " -> ".join(os.path.relpath(p) for p in cycle)
            assert importer is not None
            self._report(importer, f"import cycle: {shown}")
            return
        try:
            module = parse_file(path)
        except SpecError as error:
            self.diagnostics.extend(error.diagnostics)
            return
        self._stack.append(key)
        for imp in module.imports:
            resolved = self._resolve(imp, module)
            if resolved is not None:
                self._load(resolved, imp)
        self._stack.pop()
        self.modules[key] = module

    def _resolve(self, imp: ast.Import, module: ast.Module) -> str | None:
        if imp.is_file:
            base = Path(module.path).parent
            target = (base / imp.target) if not Path(imp.target).is_absolute() else Path(imp.target)
            if target.suffix != SPEC_SUFFIX:
                # refused before it is read: a spec must not be able to show (in a diagnostic)
                # or load any file but another spec, whatever path it names
                self._report(imp, f"cannot import '{_shown(imp.target)}': only {SPEC_SUFFIX} "
                             "spec files can be imported",
                             f"name a spec file ending in {SPEC_SUFFIX}, or a stdlib module "
                             "(import std.NAME)")
                return None
            if not target.is_file():
                what = "is a directory" if target.is_dir() else "no such file"
                self._report(imp, f"cannot import '{imp.target}': {what}",
                             f"paths are relative to {os.path.relpath(base) or '.'}")
                return None
            return str(target)
        from muxlang.stdlib.registry import module_names, module_path

        if not imp.target.startswith(STD_PREFIX):
            self._report(imp, f"unknown module '{imp.target}'",
                         "stdlib modules are named std.NAME; import files with a quoted path")
            return None
        name = imp.target[len(STD_PREFIX):]
        found = module_path(name)
        if found is None:
            hint = did_you_mean(name, module_names())
            known = ", ".join(f"std.{n}" for n in module_names())
            self._report(imp, f"unknown stdlib module '{imp.target}'",
                         hint.replace("'", "'std.", 1) if hint else f"known modules: {known}")
            return None
        return str(found)

    def _report(self, node: ast.Import, message: str, hint: str | None = None) -> None:
        text = self.modules_text(node.pos.file)
        line = text.splitlines()[node.pos.line - 1] if text else None
        self.diagnostics.append(
            Diagnostic(node.pos.file, node.pos.line, node.pos.column, message, hint, line))

    def modules_text(self, path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            return ""


def load_modules(path: str | os.PathLike) -> list[ast.Module]:
    return Loader().load(path)
