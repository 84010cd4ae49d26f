"""Command-line values and look-ups that several commands share.

`run`, `collect` and `eval` take the same kinds of option (counts, request rates, ``--backend
NAME=URL``, ``--mux NAME``); parsing them in one place keeps their messages and accepted forms the
same everywhere. Kept light: the check path imports nothing heavy, and neither does this.
"""
from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from muxlang.errors import MuxError, did_you_mean

if TYPE_CHECKING:
    from muxlang import ir

_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(?:/\s*([smh]))?\s*")
_PER_SECOND = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _whole_number_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    return _whole_number_at_least(text, 0)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return _whole_number_at_least(text, 1)


def request_rate(text: str) -> float:
    """An argparse type: ``20``, ``20/s``, ``600/m`` or ``1000/h``, in requests per second."""
    match = _RATE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a rate (e.g. 20, 20/s, 600/m)")
    value = float(match.group(1))
    if value <= 0:
        raise argparse.ArgumentTypeError("a rate must be > 0")
    return value / _PER_SECOND[match.group(2) or "s"]


def backend_urls(items: list[str], spec: ir.Spec | None = None) -> dict[str, str]:
    """``--backend NAME=URL`` values as {name: url}; with ``spec``, every name must be one of its
    backends (a typo would otherwise silently run against the spec's own URL)."""
    urls = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise MuxError(f"--backend expects NAME=URL, got '{item}'")
        urls[name.strip()] = url.strip()
    if spec is not None:
        for name in urls:
            if name not in spec.backends:
                hint = did_you_mean(name, spec.backends)
                raise MuxError(f"--backend {name}=...: the spec has no backend '{name}'"
                               + (f"; {hint}" if hint else
                                  f" (backends: {', '.join(spec.backends)})" if spec.backends
                                  else ""))
    return urls


def select_runnable(spec: ir.Spec, spec_path: str, name: str | None) -> ir.Mux | ir.Cascade:
    """The mux or cascade ``--mux NAME`` names (default: the last one declared), or a plain error
    that names the close matches or, failing those, what there is."""
    try:
        return spec.runnable(name)
    except KeyError:
        pass
    names = [*spec.muxes, *spec.cascades]
    if name is None:
        raise MuxError(f"{spec_path}: declares no mux or cascade")
    hint = did_you_mean(name, names)
    raise MuxError(f"{spec_path}: no mux or cascade named '{name}'"
                   + (f"; {hint}" if hint else
                      f" (there are: {', '.join(names)})" if names else ""))
