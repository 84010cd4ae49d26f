"""Optimizer throughput: configurations scored per second by the offline simulator.

Store: 500 items × 5 models × 9 stored samples (synthetic, seeded), 100 simulation trials per
configuration. Configurations: every pool of 1–5 models with budgets 1..9 and rule slm_mux, in a
seeded random order (the same list for both implementations). Measured:

* the vectorised simulator (``muxlang.simulator.Simulator.score``, caches warm as they
  are in a search: the per-(model, budget) tables are built on first use and counted in the time);
* a plain per-item Python loop (``plain_correct_per_trial``: the same draws through the stdlib
  ``slm_mux`` rule), on a few configurations, and checks the two agree exactly.

Last line: one JSON object with ``configs_per_second``, ``loop_configs_per_second`` and
``speedup_vs_loop``.

    .venv/bin/python bench/optimizer_throughput.py [--configs 3000] [--loop-configs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from muxlang.optimizer.search import Space
from muxlang.simulator import Config, Simulator, plain_correct_per_trial
from muxlang.votes import StoredVotes


def synthetic_store(n_items=500, n_models=5, k=9, seed=0) -> StoredVotes:
    rng = np.random.default_rng(seed)
    models = [f"model{j}" for j in range(n_models)]
    skill = np.linspace(0.45, 0.8, n_models)
    gold = rng.integers(0, 10, n_items)
    votes = {}
    for j, m in enumerate(models):
        p = np.clip(skill[j] + rng.normal(0, 0.25, n_items), 0, 1)
        right = rng.random((n_items, k)) < p[:, None]
        wrong = rng.integers(0, 14, (n_items, k))
        unreadable = rng.random((n_items, k)) < 0.03
        rows = []
        for i in range(n_items):
            rows.append([None if unreadable[i, s] else str(gold[i] if right[i, s] else wrong[i, s])
                         for s in range(k)])
        votes[m] = rows
    return StoredVotes("bench", [f"q{i}" for i in range(n_items)], models, votes,
                       [str(g) for g in gold],
                       input_tokens={m: 120.0 for m in models},
                       output_tokens={m: 300.0 for m in models},
                       price_input={m: 1e-7 for m in models},
                       price_output={m: 3e-7 for m in models})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=3000)
    parser.add_argument("--loop-configs", type=int, default=3)
    parser.add_argument("--simulations", type=int, default=100)
    args = parser.parse_args()

    votes = synthetic_store()
    space = Space(votes.models, {m: (1, 9) for m in votes.models}, (1, 5), ["slm_mux"])
    configs = list(space.enumerate())
    order = np.random.default_rng(1).permutation(len(configs))
    configs = [configs[i] for i in order[:args.configs]]

    t0 = time.perf_counter()
    sim = Simulator(votes, simulations=args.simulations, seed=0)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    accuracies = [sim.score(c, with_union=False).accuracy for c in configs]
    fast_s = time.perf_counter() - t0
    fast_rate = len(configs) / fast_s
    # a second pass: every per-(model, budget) table is cached now
    t0 = time.perf_counter()
    for c in configs:
        sim.score(c, with_union=False)
    warm_rate = len(configs) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for c in configs[: min(1000, len(configs))]:
        sim.score(c, with_union=True)
    full_rate = min(1000, len(configs)) / (time.perf_counter() - t0)

    loop_configs = configs[: args.loop_configs]
    t0 = time.perf_counter()
    agree = True
    for c, acc in zip(loop_configs, accuracies):
        plain = plain_correct_per_trial(sim, c)
        agree &= bool(np.array_equal(plain, sim.correct_per_trial(c)))
    loop_s = time.perf_counter() - t0
    loop_rate = len(loop_configs) / loop_s

    print(f"store: {len(votes.items)} items x {len(votes.models)} models x 9 samples; "
          f"{args.simulations} simulations per configuration; setup {setup:.3f}s")
    print(f"vectorised: {len(configs)} configurations in {fast_s:.2f}s = {fast_rate:,.0f}/s "
          f"(cold caches included); warm {warm_rate:,.0f}/s; with union/contradiction "
          f"{full_rate:,.0f}/s")
    print(f"plain per-item loop (stdlib slm_mux): {len(loop_configs)} configurations in "
          f"{loop_s:.2f}s = {loop_rate:.2f}/s; results identical: {agree}")
    print(f"speedup {fast_rate / loop_rate:,.0f}x")
    print(json.dumps({
        "benchmark": "optimizer_throughput", "items": len(votes.items),
        "models": len(votes.models), "samples": 9, "simulations": args.simulations,
        "configs": len(configs), "configs_per_second": round(fast_rate, 1),
        "warm_configs_per_second": round(warm_rate, 1),
        "with_union_configs_per_second": round(full_rate, 1),
        "loop_configs_per_second": round(loop_rate, 3),
        "speedup_vs_loop": round(fast_rate / loop_rate, 1), "identical": agree,
        "target_met": fast_rate >= 1000, "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
