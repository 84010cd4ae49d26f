"""``muxlang samples SPEC --dataset D [--id X] [--model M]``: the stored samples of a mux's pool
models on a dataset, as they are: a table on a terminal, JSON lines (the objects of
``run --log-samples``) with ``--json`` or when the output is not a terminal."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from muxlang.commands.options import positive_int, select_runnable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .mux spec file")
    parser.add_argument("--dataset", required=True, metavar="NAME_OR_FILE",
                        help="a dataset in the store (or the questions file it came from)")
    parser.add_argument("--id", action="append", metavar="X",
                        help="only the item with this record id (repeatable)")
    parser.add_argument("--model", action="append", metavar="M",
                        help="only this pool model, by its spec name (repeatable)")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade whose pool models to show (default: the last)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="only the dataset's first N items")
    parser.add_argument("--store", metavar="URL",
                        help="store URL or SQLite path (default: $MUXLANG_STORE, else "
                             "./muxlang.sqlite)")
    parser.add_argument("--json", action="store_true",
                        help="JSON lines, one per sample (the default when not on a terminal)")


def run(args: argparse.Namespace) -> int:
    from muxlang.sample_log import stored
    from muxlang.session import Session, load

    spec = load(args.spec)
    runnable = select_runnable(spec, args.spec, args.mux)
    rows = stored(Session(args.store), spec, args.dataset, ids=args.id, models=args.model,
                  mux=runnable, limit=args.limit)
    if args.json or not sys.stdout.isatty():
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        render(rows)
    if not rows:
        print("no stored samples match", file=sys.stderr)
    return 0


def render(rows: list[dict[str, Any]], file: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False)
    table = Table(title=f"{len(rows)} stored samples", title_justify="left", show_lines=True)
    for name, justify in (("id", "left"), ("model", "left"), ("#", "right"),
                          ("answer", "left"), ("tokens", "right"), ("text / error", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        tokens = row["tokens"]
        used = "—" if tokens["input"] is None and tokens["output"] is None else (
            f"{tokens['input'] or 0}+{tokens['output'] or 0}")
        body = row["text"] if row["text"] is not None else f"error: {row['error']}"
        if len(body) > 600:
            body = body[:300] + " … " + body[-250:]
        table.add_row(escape(str(row["id"])), escape(row["member"]), str(row["sample"]),
                      escape("—" if row["answer"] is None else str(row["answer"])), used,
                      escape(body))
    console.print(table)
