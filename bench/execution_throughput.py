"""Sandboxed executions per second on the HumanEval CodeGen-16B recordings (16,400 samples).

    python bench/execution_throughput.py [--limit N] [--workers W] [--cache PATH]

Runs every distinct program (prompt + sample) twice, in fresh sandboxes, in parallel over W
workers (default: the cores): once on its problem's probe inputs (the ``execution`` equivalence)
and once against its unit tests (HumanEval's ``check(candidate)``, the gold judge). Prints
executions per second (cold: a fresh cache; then warm: the same jobs from the cache), pass@1 by
the unit tests (the mean over all samples), pass@1 by "behaves like the canonical solution on the
probes" (what ``eval`` scores), and how often the two judges agree. Ends with a JSON line.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "humaneval-codegen"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N problems only")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache", default=None, help="execution cache file (default: a fresh one)")
    args = parser.parse_args()
    from muxlang.stdlib import execution as ex

    problems = {}
    with open(DATA / "humaneval-questions.jsonl", encoding="utf-8") as handle:
        for line in handle:
            p = json.loads(line)
            problems[p["id"]] = p
    ids = list(problems)[: args.limit] if args.limit else list(problems)
    samples = []
    with gzip.open(DATA / "humaneval-codegen16b-samples.jsonl.gz", "rt", encoding="utf-8") as h:
        for line in h:
            s = json.loads(line)
            if s["id"] in problems and s["id"] in ids:
                samples.append(s)
    cache_file = args.cache or str(Path(tempfile.mkdtemp()) / "executions.sqlite")
    cache = ex.ExecutionCache(cache_file)
    probe_jobs = [(problems[s["id"]]["prompt"] + s["text"], problems[s["id"]]["entry_point"],
                   problems[s["id"]]["probes"]) for s in samples]
    test_jobs = [ex.unit_test_job(problems[s["id"]]["prompt"] + s["text"], problems[s["id"]]["test"],
                                  problems[s["id"]]["entry_point"]) for s in samples]
    gold_jobs = [(problems[i]["prompt"] + problems[i]["answer"], problems[i]["entry_point"],
                  problems[i]["probes"]) for i in ids]
    distinct = sum(len({(p, e, tuple(i)) for p, e, i in jobs}) for jobs in (probe_jobs, test_jobs, gold_jobs))

    start = time.monotonic()
    probe = ex.run_many(probe_jobs, timeout=1.0, cache=cache, workers=args.workers)
    gold = ex.run_many(gold_jobs, timeout=1.0, cache=cache, workers=args.workers)
    tests = ex.run_many(test_jobs, timeout=5.0, cache=cache, workers=args.workers)
    cold = time.monotonic() - start
    start = time.monotonic()
    warm_cache = ex.ExecutionCache(cache_file)  # a new process would read it from disk
    ex.run_many(probe_jobs, timeout=1.0, cache=warm_cache)
    ex.run_many(test_jobs, timeout=5.0, cache=warm_cache)
    warm = time.monotonic() - start

    gold_key = {i: ex.behaviour_key(g) for i, g in zip(ids, gold)}
    passed = ex.passes(tests)
    like_gold = [ex.behaviour_key(r) is not None and ex.behaviour_key(r) == gold_key[s["id"]]
                 for r, s in zip(probe, samples)]
    agree = sum(a == b for a, b in zip(passed, like_gold))
    statuses: dict[str, int] = {}
    for r in probe + tests:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    n = len(samples)
    figures = {
        "samples": n, "problems": len(ids), "distinct_executions": distinct,
        "workers": args.workers, "cores": os.cpu_count(),
        "cold_seconds": round(cold, 1), "executions_per_second": round(distinct / cold, 1),
        "warm_seconds": round(warm, 2),
        "cached_lookups_per_second": round((len(probe_jobs) + len(test_jobs)) / warm, 1),
        "pass_at_1_unit_tests": round(100 * sum(passed) / n, 2),
        "pass_at_1_like_canonical": round(100 * sum(like_gold) / n, 2),
        "judges_agree": round(100 * agree / n, 2),
        "passes_but_differs": sum(p and not g for p, g in zip(passed, like_gold)),
        "like_canonical_but_fails": sum(g and not p for p, g in zip(passed, like_gold)),
        "canonical_passes": sum(ex.passes(ex.run_many(
            [ex.unit_test_job(problems[i]["prompt"] + problems[i]["answer"], problems[i]["test"],
                              problems[i]["entry_point"]) for i in ids], timeout=5.0,
            cache=cache))),
        "statuses": statuses,
    }
    print(f"{distinct} distinct sandboxed executions in {cold:.1f}s on {args.workers} workers: "
          f"{figures['executions_per_second']}/s (warm, from the cache: {warm:.2f}s)")
    print(f"pass@1 by unit tests {figures['pass_at_1_unit_tests']}%, by behaving like the "
          f"canonical solution on the probes {figures['pass_at_1_like_canonical']}% "
          f"(judges agree on {figures['judges_agree']}% of samples)")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
