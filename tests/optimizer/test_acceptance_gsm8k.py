"""Real-data acceptance: on the ZeroEval GSM8K recordings, with a 50/50 validation/test split of
the questions, tuning over the ten models of at most 27B finds a pool whose TEST accuracy beats
Qwen2-72B-Instruct's on the same test half."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from muxlang.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "zeroeval-gsm8k"


@pytest.mark.skipif(not (EXAMPLE / "tune.mux").is_file(), reason="example not present")
def test_tuned_small_pool_beats_72b_on_test_half(tmp_path, capsys):
    store = str(tmp_path / "gsm8k.sqlite")
    assert main(["import", str(EXAMPLE / "zeroeval-gsm8k-samples.jsonl.gz"), "--questions",
                 str(EXAMPLE / "zeroeval-gsm8k-questions.jsonl"), "--store", store]) == 0
    capsys.readouterr()
    code = main(["tune", str(EXAMPLE / "tune.mux"), "--store", store,
                 "--dataset", "zeroeval-gsm8k", "--split", "0.5", "--split-seed", "0", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    best = result["best"]
    big = result["baselines"]["references"]["qwen2_72b"]
    assert result["sampler"] == "grid" and result["trials"] == result["space_size"] == 2046
    assert result["dataset"]["items"] + result["test"]["items"] == 1319
    assert "qwen2_72b" not in best["pool"] and len(best["pool"]) >= 2
    assert best["test_accuracy"] > big["test_accuracy"]
    assert best["test_accuracy"] > result["baselines"]["best_single"]["test_accuracy"]
