"""Store benchmark: import throughput of the ZeroEval GSM8K recordings and `eval` wall time on them.

    .venv/bin/python bench/store_throughput.py                  # SQLite in a temp directory
    .venv/bin/python bench/store_throughput.py --store postgresql://postgres@127.0.0.1:5432/test

Import: 14,509 samples (1,319 questions x 11 models) into an empty store, best of --repeat runs,
each into a fresh store (PostgreSQL: a fresh schema); then the same import again (idempotent: 0
rows written). Eval: `muxlang eval examples/zeroeval-gsm8k/gsm8k.mux --dataset zeroeval-gsm8k
--json` as a subprocess (process start-up included), first with a cold answer cache (every sample
read by the extractor and equivalence, then cached) and then warm.

The last line printed is one JSON object with `samples_per_second` and `eval_seconds` (the cold
CLI run, the figure a user sees after an import), plus the details.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "zeroeval-gsm8k"
SAMPLES = EXAMPLE / "zeroeval-gsm8k-samples.jsonl.gz"
QUESTIONS = EXAMPLE / "zeroeval-gsm8k-questions.jsonl"
SPEC = EXAMPLE / "gsm8k.mux"


def fresh_url(base: str | None, workdir: Path, n: int) -> tuple[str, object]:
    if not base:
        return f"sqlite:///{workdir / f'bench{n}.sqlite'}", None
    import sqlalchemy

    from muxlang.store.urls import resolve_url

    base = resolve_url(base)
    schema = "bench_" + uuid.uuid4().hex[:10]
    engine = sqlalchemy.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a PostgreSQL URL (default: SQLite in a temp directory)")
    parser.add_argument("--repeat", type=int, default=3, help="import runs (best is reported)")
    args = parser.parse_args()

    from muxlang.store import Store, import_samples
    from muxlang.store.urls import redact_url

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        times, cleanups = [], []
        url = ""
        for n in range(args.repeat):
            url, drop = fresh_url(args.store, workdir, n)
            if drop:
                cleanups.append(drop)
            with Store(url) as store:
                started = time.perf_counter()
                result = import_samples(store, SAMPLES, QUESTIONS)
                times.append(time.perf_counter() - started)
                assert result.samples_written == 14509, result
            print(f"import {n + 1}: {result.samples_written} samples in {times[-1]:.2f}s "
                  f"({result.samples_written / times[-1]:,.0f}/s)", file=sys.stderr)
        with Store(url) as store:
            started = time.perf_counter()
            again = import_samples(store, SAMPLES, QUESTIONS)
            reimport = time.perf_counter() - started
            assert again.samples_written == 0
        print(f"re-import: 0 new samples in {reimport:.2f}s", file=sys.stderr)

        evals = []
        command = [sys.executable, "-m", "muxlang", "eval", str(SPEC), "--dataset",
                   "zeroeval-gsm8k", "--json", "--store", url]
        for label in ("cold", "warm"):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            evals.append(time.perf_counter() - started)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            report = json.loads(done.stdout)
            print(f"eval ({label} answer cache): {evals[-1]:.2f}s wall, "
                  f"{report['seconds']:.2f}s in evaluate(); SLM-MUX "
                  f"{100 * report['baselines']['slm_mux']:.1f}%, union "
                  f"{100 * report['baselines']['union']:.1f}%", file=sys.stderr)
        for drop in cleanups:
            drop()

    best = min(times)
    print(json.dumps({
        "samples_per_second": round(14509 / best, 1),
        "eval_seconds": round(evals[0], 3),
        "eval_seconds_warm": round(evals[1], 3),
        "import_seconds": [round(t, 3) for t in times],
        "reimport_seconds": round(reimport, 3),
        "samples": 14509, "items": 1319, "models": 11,
        "store": redact_url(url).split("?")[0],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
