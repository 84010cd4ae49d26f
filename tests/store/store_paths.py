"""Paths and URLs the store tests share (a module, not conftest, so test files can import it)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GSM8K_SAMPLES = EXAMPLES / "zeroeval-gsm8k" / "zeroeval-gsm8k-samples.jsonl.gz"
GSM8K_QUESTIONS = EXAMPLES / "zeroeval-gsm8k" / "zeroeval-gsm8k-questions.jsonl"
GSM8K_SPEC = EXAMPLES / "zeroeval-gsm8k" / "gsm8k.mux"
PG_URL = os.environ.get("MUXLANG_TEST_POSTGRES",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
