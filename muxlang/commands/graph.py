"""``muxlang graph SPEC [--mux NAME] [--declarations] [--format dot|mermaid|json]``."""
from __future__ import annotations

import argparse
import sys

from muxlang.errors import MuxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade whose execution plan to print (default: the last "
                             "one declared in SPEC)")
    parser.add_argument("--declarations", action="store_true",
                        help="print the declaration graph instead of an execution plan")
    parser.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")


def run(args: argparse.Namespace) -> int:
    from muxlang import compiler
    from muxlang.lang import load_spec

    spec = load_spec(args.spec)
    if args.declarations:
        graph = compiler.declaration_graph(spec)
    else:
        try:
            runnable = spec.runnable(args.mux)
        except KeyError:
            from muxlang.errors import did_you_mean

            names = [*spec.muxes, *spec.cascades]
            known = ", ".join(names) or "none"
            what = f"no mux or cascade named '{args.mux}'" if args.mux else "no mux or cascade"
            hint = did_you_mean(args.mux, names) if args.mux else None
            raise MuxError(f"{args.spec}: {what} (declared: {known})"
                           + (f"; {hint}" if hint else "")) from None
        graph = compiler.build_plan(spec, runnable)
    sys.stdout.write(compiler.FORMATS[args.format](graph))
    return 0
