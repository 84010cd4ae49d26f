"""``muxlang graph SPEC [--mux NAME] [--declarations] [--format dot|mermaid|json]``."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade whose execution plan to print (default: the last "
                             "one declared in SPEC)")
    parser.add_argument("--declarations", action="store_true",
                        help="print the declaration graph instead of an execution plan")
    parser.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot",
                        help="dot (Graphviz), mermaid (Markdown diagrams) or json (nodes, edges, "
                             "a topological order); default dot")
    parser.add_argument("--per-sample", action="store_true",
                        help="one generate node per sample even where one request with n > 1 "
                             "draws a member's samples")


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
        if not args.per_sample:
            graph = requests_view(graph)
    sys.stdout.write(compiler.FORMATS[args.format](graph))
    return 0


def requests_view(plan: Any) -> Any:
    """The plan with one ``request`` node per pool member whose samples one request with n > 1
    draws (an OpenAI-compatible backend with ``n = true``, or ``n = auto`` where the server
    honours n: said in the label), instead of one ``generate`` node per sample."""
    view = plan.copy()
    members: dict[str, list[str]] = {}
    for node, data in plan.nodes(data=True):
        if data.get("op") == "generate":
            members.setdefault(node.rsplit("#", 1)[0], []).append(node)
    for member, nodes in members.items():
        model = plan.nodes[nodes[0]]["model"]
        backend = model.backend
        if len(nodes) < 2 or backend.kind != "openai" or backend.supports_n is False:
            continue
        request = "request:" + member.split(":", 1)[1]
        n = f"n={len(nodes)}" + ("" if backend.supports_n else " if the server honours n")
        view.add_node(request, op="request", kind="request", name=f"{model.name} ({n})",
                      model=model, samples=len(nodes))
        for node in nodes:
            for pred in plan.predecessors(node):
                view.add_edge(pred, request)
            for succ in plan.successors(node):
                view.add_edge(request, succ, **plan.edges[node, succ])
            view.remove_node(node)
    return view
