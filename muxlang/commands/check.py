"""``muxlang check SPEC...``: exit 0 when every spec is valid, else print every error, exit 2."""
from __future__ import annotations

import argparse
import sys

from muxlang.errors import SpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC", help=".mux files to check")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")


def run(args: argparse.Namespace) -> int:
    from muxlang.lang import load_spec

    errors = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
        except SpecError as error:
            print(error.render(), file=sys.stderr)
            errors += len(error.diagnostics)
            continue
        if not args.quiet:
            counts = ", ".join(_count(len(items), noun) for items, noun in (
                (spec.models, "model"), (spec.tasks, "task"), (spec.muxes, "mux"),
                (spec.cascades, "cascade"), (spec.tunes, "tune block")))
            print(f"{path}: ok ({counts})")
    return 2 if errors else 0


def _count(number: int, noun: str) -> str:
    """``1 mux``, ``2 muxes``, ``0 models``."""
    plural = noun + ("es" if noun.endswith(("x", "s")) else "s")
    return f"{number} {noun if number == 1 else plural}"
