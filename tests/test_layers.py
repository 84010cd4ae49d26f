"""The layer order of muxlang, checked by import-linter (the contract is in pyproject.toml).

Nothing imports a layer above it, lazy imports inside functions included. muxlang.stdlib and
muxlang.optimizer are installed from stdlib/ and optimizer/ (pyproject's package-dir); the
repository links them as muxlang/stdlib and muxlang/optimizer so that a plain ``lint-imports``
finds them. The tests lint a folder of links of their own (the probes add files to it without
touching the repository), with that folder first on the path.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def _package_dirs() -> dict[str, Path]:
    """``{subpackage of muxlang: its folder}`` from pyproject's package-dir."""
    line = re.search(r"^package-dir\s*=\s*\{(.*)\}", PYPROJECT.read_text(), re.MULTILINE)
    assert line, "pyproject.toml has no [tool.setuptools] package-dir"
    pairs = re.findall(r'"([\w.]+)"\s*=\s*"([\w./-]+)"', line.group(1))
    return {name.split(".", 1)[1]: ROOT / folder for name, folder in pairs if "." in name}


def _link_tree(target: Path, source: Path, extra: dict[str, str],
               skip: Iterable[str] = ()) -> None:
    """``target`` mirrors ``source`` with links; folders that get an ``extra`` file are real."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.name == "__pycache__" or entry.name in skip:
            continue
        inner = {k.split("/", 1)[1]: v for k, v in extra.items()
                 if k.startswith(entry.name + "/")}
        if inner:
            _link_tree(target / entry.name, entry, inner)
        else:
            (target / entry.name).symlink_to(entry)
    for name, text in extra.items():
        if "/" not in name:
            (target / name).write_text(text)


def lint(tmp_path: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    view = tmp_path / "view"
    view.mkdir()
    extra = dict(extra or {})
    _link_tree(view / "muxlang", ROOT / "muxlang", {
        k: v for k, v in extra.items() if k.split("/", 1)[0] not in _package_dirs()},
        skip=_package_dirs())
    for name, folder in _package_dirs().items():
        inner = {k.split("/", 1)[1]: v for k, v in extra.items() if k.startswith(name + "/")}
        _link_tree(view / "muxlang" / name, folder, inner)
    exe = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the test extra (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(view)}
    return subprocess.run([str(exe), "--no-cache", str(PYPROJECT)], cwd=view, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_module_imports_a_layer_above_it(tmp_path):
    done = lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_contract_catches_upward_imports_and_unplaced_modules(tmp_path):
    """Probes: the store importing the runtime lazily, the stdlib (installed from stdlib/)
    importing the language front end, and a new module nobody gave a layer."""
    probe = "def f():\n    from muxlang.runtime import executor\n    return executor\n"
    done = lint(tmp_path, {"store/_probe.py": probe,
                           "stdlib/_probe.py": "import muxlang.lang.checker\n",
                           "_unplaced.py": "X = 1\n"})
    assert done.returncode != 0
    assert "muxlang.store._probe -> muxlang.runtime.executor" in done.stdout, done.stdout
    assert "muxlang.stdlib._probe -> muxlang.lang.checker" in done.stdout, done.stdout
    assert "not listed as layers:\n\n- muxlang._unplaced" in done.stdout, done.stdout


def test_plain_lint_imports_finds_every_layer():
    """What a developer or CI runs by hand: ``lint-imports`` from the repository root."""
    exe = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")
    done = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
