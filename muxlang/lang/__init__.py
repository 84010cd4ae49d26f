"""The language front end: text → AST (``parser``) → modules with imports (``loader``) →
checked ``ir.Spec`` (``checker``). ``load_spec`` is the entry point everything else uses.
"""
from __future__ import annotations

import os

from muxlang import ir
from muxlang.lang.checker import check_modules
from muxlang.lang.loader import load_modules
from muxlang.lang.parser import parse

__all__ = ["load_spec", "check_text", "parse"]


def load_spec(path: str | os.PathLike) -> ir.Spec:
    """Load, parse and check a spec file and its imports. Raises SpecError listing every error."""
    return check_modules(load_modules(path))


def check_text(text: str, path: str = "<string>") -> ir.Spec:
    """Check spec text that imports nothing from files (stdlib imports still work)."""
    from muxlang.lang.loader import Loader

    loader = Loader()
    module = parse(text, path)
    for imp in module.imports:
        resolved = loader._resolve(imp, module)
        if resolved is not None:
            loader._load(resolved, imp)
    if loader.diagnostics:
        from muxlang.errors import SpecError

        raise SpecError(loader.diagnostics)
    return check_modules([*loader.modules.values(), module])
