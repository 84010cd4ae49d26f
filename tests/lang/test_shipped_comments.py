"""The comments of the shipped specs say what the specs do."""
from __future__ import annotations

from pathlib import Path

import muxlang
from muxlang.semantics import decide

ROOT = Path(__file__).resolve().parents[2]


def test_gpqa_cascade_escalates_unless_two_of_three_samples_agree():
    """specs/gpqa.mux: `threshold = ...  # escalate unless two of three samples agree`."""
    spec = muxlang.load(ROOT / "specs" / "gpqa.mux")
    cascade = spec.cascades["gpqa"]
    big = ["B"] * 5
    two_agree = decide(cascade, {"llama31_8b": ["A", "A", "C"], "gemma2_27b": ["A", "B", "C"],
                                 "qwen25_14b": big})
    assert len(two_agree.steps) == 1 and two_agree.answer is not None
    none_agree = decide(cascade, {"llama31_8b": ["A", "B", "C"], "gemma2_27b": ["D", "B", "C"],
                                  "qwen25_14b": big})
    assert len(none_agree.steps) == 2
