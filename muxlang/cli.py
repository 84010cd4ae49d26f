"""The ``muxlang`` command line.

Each subcommand lives in ``muxlang.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, so ``muxlang check`` never
pays for optuna, sqlalchemy, aiohttp or math-verify.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from muxlang import __version__
from muxlang.errors import (BackendError, DatasetError, MuxError, StoreError,
                            caused_by_interrupt)

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "check": ("check", "check spec files; errors as FILE:LINE:COL"),
    "graph": ("graph", "print the declaration or execution-plan graph (dot, mermaid, json)"),
    "run": ("run", "run a mux over a JSONL file of records against model servers"),
    "collect": ("collect", "store K samples per pool model for every item of a dataset"),
    "import": ("import_samples", "import recorded model outputs (ZeroEval format) into the store"),
    "eval": ("evaluate", "evaluate a spec and the paper's baselines from stored samples"),
    "tune": ("tune", "search model subsets and sample budgets on stored samples (Optuna)"),
    "report": ("report", "plot the Pareto front and accuracy vs samples of a tuning study"),
    "samples": ("samples", "show the stored samples of a dataset: texts, answers, per model"),
    "serve": ("serve", "serve muxes behind an OpenAI-compatible HTTP endpoint"),
}


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="muxlang",
        description="Orchestrate small language models with SLM-MUX, from .mux specs.",
    )
    parser.add_argument("--version", action="version", version=f"muxlang {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def flag_hint(error: MuxError, command: str | None) -> str | None:
    """The command-line way out of a library error: the library's messages speak of stores,
    datasets and backends, never of this command line's flags, so the hints that name a flag
    are added here, from the error's kind and fields."""
    takes_backend = command in ("run", "collect", "serve")
    if isinstance(error, StoreError):
        if error.missing:
            return ("`muxlang import` or `muxlang collect` fill a store; --store URL or "
                    "$MUXLANG_STORE chooses which store a command uses")
        if error.opening:
            return "--store URL or $MUXLANG_STORE chooses the store (default ./muxlang.sqlite)"
    elif isinstance(error, DatasetError):
        if getattr(error, "conflict", False) and command == "import":
            return "import with --replace to replace the stored texts with this file's"
        if error.clash:
            flag = {"import": "--dataset NAME", "collect": "--name NAME"}.get(command or "")
            return f"name this one with {flag}" if flag else None
        if error.known == []:
            return ("`muxlang import` or `muxlang collect` put datasets in a store; --store URL "
                    "chooses another store")
    elif isinstance(error, BackendError):
        if error.needs == "url" and takes_backend and error.backend:
            return f"give it with --backend {error.backend}=URL"
        if error.needs == "kind":
            return "`muxlang eval` and `muxlang tune` read replay backends' samples from the store"
    return None


def _chosen(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = _top_parser()
    chosen = _chosen(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"muxlang.commands.{module_name}")
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        from muxlang.envfile import load_env_file

        load_env_file()  # ./.env: values for env(...), the real environment wins
        return int(args._run(args) or 0)
    except MuxError as error:
        from muxlang.runtime.secrets import scrub

        hint = flag_hint(error, args.command)
        print(scrub(error.render() + (f"\n  hint: {hint}" if hint else "")), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as error:  # a bug of ours: say so plainly, keep the traceback on request
        if caused_by_interrupt(error):
            print("interrupted", file=sys.stderr)
            return 130
        if os.environ.get("MUXLANG_DEBUG"):
            raise
        from muxlang.runtime.secrets import clip

        # scrubbed like every message: the error may quote a server's reply that echoed the key
        print(f"internal error: {type(error).__name__}: {clip(error, 2000)}\n"
              "this is a bug in muxlang; set MUXLANG_DEBUG=1 to see the traceback and report it",
              file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
