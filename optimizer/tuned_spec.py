"""Write the tuned spec: the source spec's text with the tuned mux's ``pool`` (and ``rule`` and
``adaptive``: the policy tune chose, ``TuneResult.best.adaptive``) replaced.

Only the value spans of those keys change (found with the parser's character spans); comments and
layout elsewhere stay byte for byte. A header comment records where the result came from. Relative
``import "file.mux"`` paths are rewritten when the tuned spec is written to another folder, so it
still finds what the source imported.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from muxlang.errors import MuxError
from muxlang.lang import ast
from muxlang.lang.loader import read_source
from muxlang.lang.parser import parse
from muxlang.simulator import Config

HEADER_START = "# ---- tuned by `muxlang tune` "
HEADER_END = "# ---- end of tuning record"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def redact_url(url: str | None) -> str | None:
    """A database or store URL with user, password and query removed."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme or not parts.netloc:
        return url.split("?")[0] if "@" not in url else "<url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class Record:
    """What the header says."""

    source_path: str
    source_hash: str
    dataset: str
    dataset_hash: str
    store: str | None
    study: str | None
    storage: str | None
    objective: str
    val_accuracy: float
    val_se: float
    val_se_items: float
    test_accuracy: float | None
    test_se: float | None
    test_se_items: float | None
    simulations: int
    seed: int
    config: Config
    test_dataset: str | None = None
    date: str | None = None
    # the mux's own sampling policy, when the tune block's adaptive list left it out (so tune
    # never measured it) and ``config.adaptive`` replaces it: TuneResult.untried_adaptive
    replaced_adaptive: str | None = None

    def lines(self) -> list[str]:
        date = self.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = [
            HEADER_START + "-" * 30,
            f"# date:        {date}",
            f"# source spec: {self.source_path} sha256:{self.source_hash}",
            f"# dataset:     {self.dataset} sha256:{self.dataset_hash}",
        ]
        if self.test_dataset:
            out.append(f"# test data:   {self.test_dataset}")
        out += [
            f"# store:       {redact_url(self.store) or '-'}",
            f"# study:       {self.study or '-'}"
            + (f" in {redact_url(self.storage)}" if self.storage else ""),
            f"# objective:   {self.objective}",
            f"# chosen:      {self.config}",
        ]
        if self.replaced_adaptive is not None:
            out.append(f"# adaptive:    {self.config.adaptive} replaces the mux's own "
                       f"{self.replaced_adaptive}, which the tune block's adaptive list left "
                       "out (never measured)")
        out += [
            f"# validation accuracy: {self.val_accuracy:.4f} ± {self.val_se:.4f} "
            f"(SE over {self.simulations} simulations, seed {self.seed}; ± {self.val_se_items:.4f} "
            f"over items)",
        ]
        if self.test_accuracy is not None:
            out.append(f"# test accuracy:       {self.test_accuracy:.4f} ± {self.test_se:.4f} "
                       f"(± {self.test_se_items:.4f} over items)")
        else:
            out.append("# test accuracy:       - (no test data given)")
        out.append(HEADER_END)
        return out


def strip_header(text: str) -> str:
    """Remove a previous tuning record at the top of a spec (re-tuning a tuned spec)."""
    if not text.startswith(HEADER_START):
        return text
    end = text.find(HEADER_END)
    if end < 0:
        return text
    rest = text[end + len(HEADER_END):]
    return rest[1:] if rest.startswith("\n") else rest


def pool_text(config: Config, indent: int, column: int, width: int = 100) -> str:
    members = [f"{m} * {b}" for m, b in config.pool]
    one_line = "[" + ", ".join(members) + "]"
    if column + len(one_line) <= width:
        return one_line
    pad = " " * (indent + 2)
    return "[\n" + "".join(f"{pad}{m},\n" for m in members) + " " * indent + "]"


def _line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


def _line_end(text: str, offset: int) -> int:
    end = text.find("\n", offset)
    return len(text) if end < 0 else end


def _added_key(source: str, decl: ast.Decl, after: int, indent: int,
               text: str) -> tuple[int, int, str]:
    """An edit adding ``text`` (a ``key = value``) after the value ending at ``after``: on a
    line of its own, or on the same line when the declaration closes there (``mux m { ... }``
    written on one line), where a new line would land after the closing brace."""
    end = _line_end(source, after)
    if decl.end <= end:
        return after, after, "  " + text
    return end, end, "\n" + " " * indent + text


def find_mux(module: ast.Module, name: str) -> ast.Decl:
    for decl in module.decls:
        if decl.kind == "mux" and decl.name == name:
            return decl
    raise MuxError(f"mux '{name}' is not declared in {module.path} (it comes from an import); "
                   f"tune a spec file that declares it, or copy the mux into this file")


def tuned_text(source: str, path: str, mux: str, config: Config, header: Sequence[str],
               out_path: str | None = None) -> str:
    """The tuned spec's text. ``out_path`` (where it will be written) fixes relative imports."""
    if not config.pool:
        raise MuxError("the chosen pool is empty")
    module = parse(source, path)
    decl = find_mux(module, mux)
    edits: list[tuple[int, int, str]] = []
    pool = decl.get("pool")
    if pool is None:
        raise MuxError(f"mux '{mux}' has no pool to replace")
    indent = pool.pos.column - 1
    value_column = pool.value.pos.column
    edits.append((pool.value.start, pool.value.end, pool_text(config, indent, value_column)))
    rule = decl.get("rule")
    if rule is not None:
        edits.append((rule.value.start, rule.value.end, config.rule))
    elif config.rule != "slm_mux":
        edits.append(_added_key(source, decl, pool.value.end, indent, f"rule = {config.rule}"))
    adaptive = decl.get("adaptive")
    written = source[adaptive.value.start:adaptive.value.end] if adaptive is not None else "off"
    if written != config.adaptive:
        if adaptive is not None:
            edits.append((adaptive.value.start, adaptive.value.end, config.adaptive))
        else:
            after = rule.value.end if rule is not None else pool.value.end
            edits.append(_added_key(source, decl, after, indent,
                                    f"adaptive = {config.adaptive}"))
    if out_path is not None:
        src_dir = Path(path).resolve().parent
        out_dir = Path(out_path).resolve().parent
        if src_dir != out_dir:
            for imp in module.imports:
                if not imp.is_file or os.path.isabs(imp.target):
                    continue
                target = (src_dir / imp.target).resolve()
                new = os.path.relpath(target, out_dir).replace(os.sep, "/")
                edits.append((imp.start, imp.end, f'import "{new}"'))
    text = source
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end:]
    return "\n".join(header) + "\n" + strip_header(text)


def write_tuned_spec(spec_path: str, mux: str, config: Config, record: Record,
                     out_path: str) -> str:
    """Write the tuned spec to ``out_path``, check it, return its text."""
    source = read_source(spec_path)
    text = tuned_text(source, spec_path, mux, config, record.lines(), out_path)
    target = Path(out_path)
    if target.is_dir():
        raise MuxError(f"{out_path} is a directory; give a file name like tuned.mux")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as error:
        raise MuxError(f"cannot write {out_path}: {error.strerror or error}")
    from muxlang.lang import load_spec

    load_spec(target)  # the tuned spec must check; a SpecError here is reported as is
    return text


def config_of_spec(spec, mux: str) -> Config:
    """The pool, rule and sampling policy of ``mux`` in a checked spec, as a Config (delta(p),
    which the simulator does not replay, as off)."""
    m = spec.muxes[mux]
    return Config(tuple((p.name, p.samples) for p in m.pool), m.rule.name,
                  m.adaptive if m.adaptive in ("off", "exact") else "off")
