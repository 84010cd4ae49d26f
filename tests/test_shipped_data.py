"""Every real-data file the tests read is in the repository (with its licence notice), so a fresh
clone without ../shared runs every test instead of skipping."""
from __future__ import annotations

import re
from pathlib import Path

from tests.support.data import ROOT, data_file


def test_every_data_file_the_tests_read_ships_in_the_repository():
    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names |= set(re.findall(r"data_file\(f?\"([^\"{}]+)\"\)", path.read_text()))
    for task in ("gsm8k", "math-l5"):  # tests/optimizer/opt_helpers.py: f"zeroeval-{task}-..."
        names |= {f"zeroeval-{task}-questions.jsonl", f"zeroeval-{task}-samples.jsonl.gz"}
    assert "slm-mux-math-500.json" in names
    for name in sorted(names):
        found = data_file(name)
        assert found.exists() and ROOT in found.parents, name
        assert (found.parent / "NOTICE.md").exists(), f"{name}: no licence notice beside it"
