#!/usr/bin/env bash
# The README's main job: import real recorded outputs of 11 open models on GSM8K (and 12 on MATH
# level 5) into the default store (SQLite, ./muxlang.sqlite or $MUXLANG_STORE), then evaluate
# SLM-MUX and the paper's baselines on them, choosing tie-breaks on a validation split.
#
#   bash examples/run_default.sh            # from the repository root, after `pip install -e .`
#   MUXLANG_STORE=postgresql://postgres@127.0.0.1:5432/test bash examples/run_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
muxlang=${MUXLANG:-muxlang}
if ! command -v "$muxlang" >/dev/null 2>&1; then
  muxlang=.venv/bin/muxlang
fi

g=examples/zeroeval-gsm8k
"$muxlang" import "$g/zeroeval-gsm8k-samples.jsonl.gz" --questions "$g/zeroeval-gsm8k-questions.jsonl"
"$muxlang" eval "$g/gsm8k.mux" --dataset "$g/gsm8k-test.jsonl" --validation "$g/gsm8k-val.jsonl"

m=examples/zeroeval-math-l5
"$muxlang" import "$m/zeroeval-math-l5-samples.jsonl.gz" --questions "$m/zeroeval-math-l5-questions.jsonl"
"$muxlang" eval "$m/math-l5.mux" --dataset "$m/math-l5-test.jsonl" --validation "$m/math-l5-val.jsonl"
