"""``muxlang graph SPEC [--mux NAME] [--declarations] [--format dot|mermaid|json]``."""
from __future__ import annotations

import argparse
import sys


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
    from muxlang.commands.options import select_runnable
    from muxlang.lang import load_spec

    spec = load_spec(args.spec)
    if args.declarations:
        graph = compiler.declaration_graph(spec)
    else:
        runnable = select_runnable(spec, args.spec, args.mux)
        graph = compiler.build_plan(spec, runnable)
    sys.stdout.write(compiler.FORMATS[args.format](graph))
    return 0
