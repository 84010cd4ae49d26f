"""``muxlang serve SPEC``: the spec's muxes behind an OpenAI-compatible endpoint.

A thin adapter over ``muxlang.serve.MuxServer``: parses the options, says where it listens and
what it serves, and exits 0 after a graceful stop (SIGTERM or Ctrl-C), 2 on a bad option or spec.
"""
from __future__ import annotations

import argparse
import os
import sys

from muxlang.commands.options import backend_urls, positive_int, request_rate
from muxlang.errors import MuxError


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number of seconds > 0")
    return value


def _non_negative(text: str) -> int:
    from muxlang.commands.options import non_negative_int

    return non_negative_int(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is from 0 to 65535 (0: any free port)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .mux spec file (a tuned spec)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000,
                        help="port to listen on (default 8000; 0: any free port)")
    parser.add_argument("--mux", action="append", default=[], metavar="NAME",
                        help="serve only this mux or cascade (repeatable; default: every one "
                             "whose backends are model servers)")
    parser.add_argument("--store", metavar="URL",
                        help="cache samples in this sample store (URL or SQLite path): what is "
                             "stored is not drawn again, what is drawn is stored")
    parser.add_argument("--cache", action="store_true",
                        help="cache samples in the default store ($MUXLANG_STORE, else "
                             "./muxlang.sqlite), as --store URL does in that one")
    parser.add_argument("--backend", action="append", default=[], metavar="NAME=URL",
                        help="override a backend's URL (repeatable); also "
                             "MUXLANG_BACKEND_<NAME>_URL, and MUXLANG_BACKEND_<NAME>_KEY for its "
                             "key")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="require 'Authorization: Bearer <key>' with the key held in "
                             "environment variable VAR (every route but /health)")
    parser.add_argument("--concurrency", type=positive_int, metavar="N",
                        help="requests in flight per backend (overrides the spec)")
    parser.add_argument("--rate", type=request_rate, metavar="R",
                        help="request rate cap per backend, e.g. 20 or 20/s or 600/m")
    parser.add_argument("--in-flight", type=positive_int, metavar="N",
                        help="chat requests answered at once (default: from the concurrency, "
                             "as `run`'s records in flight)")
    parser.add_argument("--queue", type=_non_negative, default=256, metavar="N",
                        help="chat requests waiting beyond those before the server answers 429 "
                             "(default 256)")
    parser.add_argument("--deadline", type=_seconds, metavar="SECONDS",
                        help="answer 504 to a request not answered within SECONDS (default: "
                             "none; a request's mux.deadline overrides it)")
    parser.add_argument("--max-samples", type=positive_int, default=64, metavar="N",
                        help="the largest per-member count a request's mux.samples may ask "
                             "(default 64)")
    parser.add_argument("--shutdown-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                        help="on SIGTERM or Ctrl-C, how long in-flight requests may take to "
                             "finish (default 30)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from muxlang.serve import MuxServer
    from muxlang.session import Session, describe_tie_breaks, load

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            state = "is empty" if args.api_key_env in os.environ else "is not set"
            raise MuxError(f"--api-key-env {args.api_key_env}: the variable {state}")
        from muxlang.runtime.secrets import register_key_env

        register_key_env(args.api_key_env)  # masked in anything printed
    spec = load(args.spec)
    urls = backend_urls(args.backend, spec)
    seen: set[str] = set()

    def warn(message: str) -> None:
        if message not in seen:  # runners made for sample overrides repeat their warnings
            seen.add(message)
            _say(f"warning: {message}")

    session = Session(args.store, urls, cache=args.store is not None or args.cache,
                      concurrency=args.concurrency, rate=args.rate, warn=warn)
    server = MuxServer(spec, session, args.mux or None, api_key=api_key,
                       in_flight=args.in_flight, queue=args.queue, deadline=args.deadline,
                       max_samples=args.max_samples, shutdown_timeout=args.shutdown_timeout,
                       source=f"serve {args.host}:{args.port}")
    for note in server.notes:
        _say(note)
    for served in server.served.values():
        for line in describe_tie_breaks(served.runner.info):
            _say(line)

    def ready(srv: MuxServer) -> None:
        names = ", ".join(f"{s.name} ({s.info['kind']}, {s.info['budget']} samples)"
                          for s in srv.served.values())
        _say(f"serving {names}")
        _say(f"listening on {srv.url}/v1 (chat/completions, models; /health, /metrics); "
             f"{srv.in_flight} requests at once, {srv.queue} queued"
             + ("; bearer key required" if api_key else ""))

    def stopping(name: str) -> None:
        _say(f"{name}: stopping; in-flight requests get {args.shutdown_timeout:g} s to finish "
             "(send it again to cancel them)")

    server.serve_forever(args.host, args.port, on_ready=ready, on_stopping=stopping)
    _say(f"stopped: {server.metrics.answered} requests answered, {server.metrics.failed} "
         "with errors")
    return 0
