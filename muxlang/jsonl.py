"""The one reader of JSON-lines input files (datasets, questions, recorded samples, run input).

Every command that reads records from a file goes through here, so they all accept and refuse
the same things and locate a bad line the same way: ``FILE:LINE``, where LINE is the line the
problem is on (a byte that is not UTF-8 on line 4 is reported on line 4, not where a buffered
decoder happened to stop).

- ``iter_records(path)``: ``(line number, record)`` of a ``.jsonl`` (optionally ``.gz``) file,
  streamed; a file that is one JSON list (``[...]``) is read whole. Blank lines are skipped.
- ``parse_line(text)``: one line's record (what ``muxlang run`` uses on its streamed input, which
  it decodes with ``errors="surrogateescape"`` so that a bad byte reaches this check).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from muxlang.errors import DataError, DatasetError

BOM = "\ufeff"


class LineError(ValueError):
    """What is wrong with one line (without its file and line number)."""


def _undecodable(text: str) -> str | None:
    """A message when ``text`` holds bytes that were not UTF-8 (decoded with surrogateescape:
    they are lone surrogates U+DC80..U+DCFF, which no valid UTF-8 text decodes to)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        if "\udc80" <= bad <= "\udcff":
            return (f"not UTF-8: byte 0x{ord(bad) - 0xDC00:02x} at column {error.start + 1} "
                    "(save the file as UTF-8)")
    return None


def decode_line(raw: bytes) -> str:
    """One line's bytes as text; ``LineError`` naming the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineError(f"not UTF-8: byte 0x{raw[error.start]:02x} at column {error.start + 1} "
                        "(save the file as UTF-8)") from None


def parse_line(text: str) -> Any:
    """The JSON value of one line; ``LineError`` for bytes that were not UTF-8 or bad JSON."""
    problem = _undecodable(text)
    if problem:
        raise LineError(problem)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LineError(f"invalid JSON at column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise LineError("invalid JSON: nested too deeply") from None


def parse_record(text: str) -> dict:
    """``parse_line`` that must give a JSON object."""
    record = parse_line(text)
    if not isinstance(record, dict):
        raise LineError("not a JSON object")
    return record


def dumps_line(value: Any) -> str:
    """One JSON line (with its newline) that can be written as UTF-8: readable UTF-8 text, but
    a lone surrogate (a model may answer one) written as its ``\\uXXXX`` escape, which any JSON
    reader reads back as the same string, where writing it raw would fail."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text + "\n"


def _open_binary(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Records of a JSONL (optionally .gz) file as (line number, record), read as a stream; a
    JSON list (``[...]``) is read whole. Blank lines are skipped. A line that is not UTF-8, not
    JSON or not a JSON object, or a file that cannot be read to its end, raises ``DataError`` at
    its line."""
    name = str(path)
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{name}: no such file" if not p.exists() else f"{name}: not a file",
                           dataset=name)
    number = 0
    try:
        with _open_binary(p) as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
            handle.seek(0)
            if head.startswith(b"["):
                yield from _json_list(name, handle.read())
                return
            for number, raw in enumerate(handle, 1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    record = parse_record(decode_line(raw))
                except LineError as error:
                    raise DataError(name, number, str(error)) from None
                yield number, record
    except (OSError, EOFError) as error:
        raise DataError(name, number + 1, f"cannot read: {error}") from None


def _json_list(name: str, data: bytes) -> Iterator[tuple[int, dict]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(name, line, f"not UTF-8: byte 0x{data[error.start]:02x} at column "
                                    f"{column} (save the file as UTF-8)") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(name, error.lineno, f"invalid JSON at column {error.colno}: "
                                            f"{error.msg}") from None
    except RecursionError:
        raise DataError(name, 1, "invalid JSON: nested too deeply") from None
    if not isinstance(values, list):
        raise DataError(name, 1, "not a JSON list of objects")
    for index, record in enumerate(values):
        if not isinstance(record, dict):
            raise DataError(name, 1, f"element {index} is not a JSON object")
        yield index + 1, record


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """All of :func:`iter_records` as a list."""
    return list(iter_records(path))
