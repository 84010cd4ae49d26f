"""Typed library errors speak of the library; the command line adds the flags that fix them."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from muxlang.cli import flag_hint, main
from muxlang.errors import BackendError, DataError, DatasetError, MuxError, StoreError
from muxlang.runtime.backends import BackendSettings, make_backend
from muxlang.store import Store

ROOT = Path(__file__).resolve().parent.parent
# library modules whose error texts were cleaned of command-line flags (issue 9)
LIBRARY = ["muxlang/store", "muxlang/runtime/backends.py", "muxlang/prompts.py",
           "muxlang/samples.py", "optimizer/search.py", "optimizer/grid.py",
           "optimizer/tuned_spec.py"]


def _raised_texts(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield node.lineno, part.value


def test_library_error_texts_name_no_command_line_flag():
    files = [p for entry in LIBRARY for p in (
        sorted((ROOT / entry).glob("*.py")) if (ROOT / entry).is_dir() else [ROOT / entry])]
    found = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in files
             for line, text in _raised_texts(p) if re.search(r"(^|\s)--[a-z]", text)]
    assert not found, "\n".join(found)


def test_kinds_are_mux_errors():
    for kind in (StoreError, BackendError, DatasetError, DataError):
        assert issubclass(kind, MuxError)
    assert issubclass(DataError, DatasetError)


def test_a_missing_store_is_a_store_error_and_the_cli_says_how_to_fill_or_choose_one(
        tmp_path, capsys, monkeypatch):
    with pytest.raises(StoreError) as caught:
        Store(str(tmp_path / "typo.sqlite"), must_exist=True)
    assert caught.value.missing and "--" not in str(caught.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.mux").write_text(
        'backend b { kind = replay }\nmodel m { backend = b }\n'
        'task t { user = "{q}" }\nmux x { task = t  pool = [m * 1] }\n')
    assert main(["eval", "a.mux", "--dataset", "d", "--store", "typo.sqlite"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "hint: `muxlang import` or `muxlang collect` fill a store; --store URL" in err


def test_an_unknown_store_scheme_gets_the_store_flag_hint():
    with pytest.raises(StoreError) as caught:
        Store("mysql://u@h/x")
    assert caught.value.opening
    assert "--store URL or $MUXLANG_STORE" in flag_hint(caught.value, "eval")


def test_a_dataset_name_clash_names_the_flag_of_the_command(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    store.put_dataset("d", [{"id": 1, "q": "a"}])
    with pytest.raises(DatasetError) as caught:
        store.put_dataset("d", [{"id": 1, "q": "b"}])
    error = caught.value
    assert error.clash and error.dataset == "d" and "--" not in str(error)
    assert flag_hint(error, "import") == "name this one with --dataset NAME"
    assert flag_hint(error, "collect") == "name this one with --name NAME"
    assert flag_hint(error, "eval") is None
    with pytest.raises(DatasetError) as unknown:
        store.require_dataset("e")
    assert unknown.value.known == ["d"] and flag_hint(unknown.value, "eval") is None
    empty = Store(str(tmp_path / "empty.sqlite"))
    with pytest.raises(DatasetError) as nothing:
        empty.require_dataset("e")
    assert "muxlang import" in flag_hint(nothing.value, "eval")


def test_backend_errors_say_what_is_missing_and_the_cli_names_the_override():
    with pytest.raises(BackendError) as caught:
        BackendSettings("local", "openai", "").check(None)
    error = caught.value
    assert (error.backend, error.needs) == ("local", "url")
    assert "--" not in str(error) and "MUXLANG_BACKEND_LOCAL_URL" in str(error)
    assert flag_hint(error, "run") == "give it with --backend local=URL"
    assert flag_hint(error, "eval") is None
    with pytest.raises(BackendError) as kind:
        make_backend(BackendSettings("r", "replay", "http://h"))
    assert kind.value.needs == "kind" and "replay backends only serve stored samples" in str(
        kind.value)
