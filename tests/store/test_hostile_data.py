"""Issue 10, data: input files with bad bytes, echoed values, long names, stores that must not be
touched, conflicting recordings, text no database takes, racing registrations, damaged files."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from muxlang.cli import main
from muxlang.errors import DataError, shorten
from muxlang.jsonl import iter_records
from store_paths import ROOT
from tests.support.helpers import KEY, KEY_ENV, read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer


def lines_with_bad_byte(path: Path, bad_line: int = 4, total: int = 6) -> Path:
    raw = b""
    for number in range(1, total + 1):
        question = f"question {number}".encode()
        if number == bad_line:
            question += b" caf\xe9"  # Latin-1, not UTF-8
        raw += b'{"id": %d, "question": "%s", "answer": "1"}\n' % (number, question)
    path.write_bytes(raw)
    return path


# ---- one reader for JSONL input files --------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_a_byte_that_is_not_utf8_is_reported_on_its_own_line(tmp_path, gz):
    path = lines_with_bad_byte(tmp_path / "q.jsonl")
    if gz:
        import gzip

        packed = tmp_path / "q.jsonl.gz"
        packed.write_bytes(gzip.compress(path.read_bytes()))
        path = packed
    with pytest.raises(DataError) as caught:
        list(iter_records(path))
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{path}:4: not UTF-8: byte 0xe9 at column ")


def test_a_json_list_with_a_bad_byte_names_its_line(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b'[\n{"id": 1},\n{"id": 2},\n{"id": "\xff"}\n]\n')
    with pytest.raises(DataError, match=r"q.json:4: not UTF-8: byte 0xff at column 9"):
        list(iter_records(path))


def test_collect_and_run_refuse_the_same_bad_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.chdir(tmp_path)
    server = ScriptedServer().start()
    try:
        spec = tmp_path / "s.mux"
        spec.write_text(spec_text(server.openai_url, models=("a",), samples=1))
        data = lines_with_bad_byte(tmp_path / "q.jsonl")
        # collect refuses the file, naming line 4
        assert main(["collect", str(spec), "--dataset", str(data), "--samples", "1",
                     "--store", str(tmp_path / "c.sqlite"), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"{data}:4: not UTF-8" in err
        # run answers the other lines and refuses line 4 with the same reason (no silent U+FFFD)
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(data), "--output", str(out),
                     "--no-progress"]) == 1
        results = read_jsonl(out)
        assert len(results) == 6
        assert results[3]["error"].startswith(f"{data}:4: not UTF-8: byte 0xe9")
        assert all(r["error"] is None for i, r in enumerate(results) if i != 3)
        assert not any("\ufffd" in json.dumps(r) for r in results)
    finally:
        server.stop()


# ---- echoed values are capped ------------------------------------------------------------------
def test_shorten_caps_what_an_error_echoes():
    assert shorten("q1") == "'q1'"
    long = "x" * 1_000_000
    shown = shorten(long)
    assert len(shown) < 120 and "1,000,000 characters" in shown
