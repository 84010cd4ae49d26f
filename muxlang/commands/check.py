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
            counts = (f"{len(spec.models)} models, {len(spec.tasks)} tasks, {len(spec.muxes)} "
                      f"muxes, {len(spec.cascades)} cascades, {len(spec.tunes)} tune blocks")
            print(f"{path}: ok ({counts})")
    return 2 if errors else 0
