"""`muxlang tune` end to end on issue 12's shape, against the code before the change.

Shape: 2 candidates x budgets 0..24 x rules slm_mux / majority / single = 1,872 configurations,
walked by the grid sampler with 100 simulations on 200 items (synthetic, seeded: per item a gold
number and up to 20 distinct wrong ones, about 3% unreadable samples, per-item skills around
0.62 and 0.55). Both implementations import the same samples files into their own SQLite store
and run the same spec through their own command line:

* **baseline**: the code at ``--baseline`` (default 5ff1f38, main when issue 12 was filed),
  checked out with ``git worktree`` into a temporary directory and run from there;
* **current**: this checkout.

Each is timed from process start to exit (best of ``--repeat``): the whole command. The search
itself is ``run_search`` (the Optuna study, every configuration scored), timed inside the same
command line by a wrapper both versions share (``muxlang.optimizer.tuning.run_search`` and
``muxlang.cli.main`` exist in both). The floor is the current simulator scoring the same 1,872
configurations in a bare loop in this process (no Optuna, no report).

Last line: one JSON object with ``command_speedup`` (baseline / current whole command, target
>= 3), ``search_speedup`` (target >= 10), ``search_vs_floor`` and ``same_best``.

    .venv/bin/python bench/tune_speed.py [--baseline REV] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"alpha": 0.62, "beta": 0.55}

SPEC = """
backend rec { kind = replay }
model alpha { backend = rec  temperature = 0.7 }
model beta { backend = rec  temperature = 0.7 }
task t {
  user        = "{question}"
  extract     = final_number
  equivalence = numeric(tolerance = 1e-6)
  gold        = "answer"
}
mux m { task = t  pool = [alpha * 3, beta * 3] }
tune s {
  mux         = m
  candidates  = [alpha, beta]
  samples     = 0..%(k)d
  rules       = [slm_mux, majority, single]
  trials      = %(trials)d
  simulations = %(simulations)d
  sampler     = grid
}
"""


def write_data(folder: Path, items: int, k: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 1000, items)
    with open(folder / "questions.jsonl", "w") as out:
        for i in range(items):
            out.write(json.dumps({"id": f"q{i}", "question": f"question {i}",
                                  "answer": str(gold[i])}) + "\n")
    with gzip.open(folder / "samples.jsonl.gz", "wt") as out:
        for model, skill in MODELS.items():
            p = np.clip(skill + rng.normal(0, 0.3, items), 0.02, 0.98)
            for i in range(items):
                wrong = gold[i] + rng.integers(1, 40, 20)
                for j in range(k):
                    if rng.random() < 0.03:
                        text = "I am not sure."
                    elif rng.random() < p[i]:
                        text = f"#### {gold[i]}"
                    else:
                        text = f"#### {wrong[rng.integers(0, 20)]}"
                    out.write(json.dumps({"id": f"q{i}", "model": model, "sample": j,
                                          "temperature": 0.7, "text": text}) + "\n")


def checkout(rev: str, into: Path) -> Path:
    """The code at ``rev`` in a worktree; the package links the wheel's layout needs."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(into), rev],
                   check=True, capture_output=True)
    for name in ("stdlib", "optimizer"):
        link = into / "muxlang" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    return into


DRIVER = """
import json, sys, time
import muxlang.optimizer.tuning as tuning
from muxlang import cli
inner, spent = tuning.run_search, []
def timed(*args, **kwargs):
    start = time.perf_counter()
    try:
        return inner(*args, **kwargs)
    finally:
        spent.append(time.perf_counter() - start)
tuning.run_search = timed
code = cli.main(sys.argv[1:])
print(json.dumps({"search_seconds": sum(spent)}), file=sys.stderr)
sys.exit(code)
"""


def timed(code: Path, args: list[str], cwd: Path, repeat: int,
          driver: bool = False) -> tuple[float, str, str]:
    """Best wall time of ``repeat`` runs of the command line, its output and its errors."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    start_with = ["-c", DRIVER] if driver else ["-m", "muxlang"]
    best, out, err = float("inf"), "", ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *start_with, *args], cwd=cwd, env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({code}):\n{done.stderr[-2000:]}")
        if elapsed < best:
            best, out, err = elapsed, done.stdout, done.stderr
    return best, out, err


def measure(code: Path, work: Path, name: str, k: int, simulations: int, trials: int,
            repeat: int) -> dict:
    store = work / f"{name}.sqlite"
    timed(code, ["import", "samples.jsonl.gz", "--questions", "questions.jsonl",
                 "--store", str(store)], work, 1)
    (work / f"{name}.mux").write_text(SPEC % {"k": k, "trials": trials,
                                             "simulations": simulations})
    args = ["tune", f"{name}.mux", "--dataset", "questions", "--store", str(store),
            "--no-progress", "--json"]
    command, out, _ = timed(code, args, work, repeat)
    search = min(json.loads(timed(code, args, work, 1, driver=True)[2].splitlines()[-1])
                 ["search_seconds"] for _ in range(repeat))
    return {"command": command, "search": search, "result": json.loads(out)}


def floor(work: Path, k: int, simulations: int) -> tuple[float, int]:
    """The current simulator scoring the whole grid in a bare loop (what the search can't beat)."""
    import muxlang
    from muxlang.simulator import Config, Simulator
    from muxlang.store.votes import load_votes

    spec = muxlang.load(work / "current.mux")
    store = muxlang.Session(work / "current.sqlite").open_store(must_exist=True)
    info = store.require_dataset("questions")
    votes = load_votes(store, spec, spec.muxes["m"], info,
                       models=[spec.models[m] for m in MODELS], task=spec.tasks["t"])
    configs = [Config.of({"alpha": a, "beta": b}, rule)
               for rule in ("slm_mux", "majority", "single")
               for a in range(k + 1) for b in range(k + 1) if a or b]
    start = time.perf_counter()
    sim = Simulator(votes, simulations, 0)
    for config in configs:
        sim.score(config, with_union=False)
    return time.perf_counter() - start, len(configs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="5ff1f38")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    k, trials = args.samples, 3 * ((args.samples + 1) ** 2 - 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work, args.items, k)
        base_code = checkout(args.baseline, work / "baseline-code")
        try:
            base = measure(base_code, work, "baseline", k, args.simulations, trials, args.repeat)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_code)], capture_output=True)
            shutil.rmtree(base_code, ignore_errors=True)
        current = measure(ROOT, work, "current", k, args.simulations, trials, args.repeat)
        floor_s, n_configs = floor(work, k, args.simulations)
    same_best = all(base["result"]["best"][key] == current["result"]["best"][key]
                    for key in ("pool", "rule"))
    print(f"shape: 2 candidates x budgets 0..{k} x 3 rules = {trials} configurations, "
          f"{args.simulations} simulations, {args.items} items (best of {args.repeat})")
    for name, m in (("baseline " + args.baseline, base), ("current", current)):
        print(f"{name:>17}: command {m['command']:.2f}s, search {m['search']:.2f}s "
              f"({trials / max(m['search'], 1e-9):,.0f} configurations/s)")
    print(f"{'floor':>17}: {n_configs} configurations scored in a bare loop in {floor_s:.2f}s")
    command_speedup = base["command"] / current["command"]
    search_speedup = base["search"] / max(current["search"], 1e-9)
    print(f"whole command {command_speedup:.1f}x faster (target 3x), search "
          f"{search_speedup:.1f}x (target 10x), search / floor {current['search'] / floor_s:.2f}; "
          f"same winner: {same_best}")
    print(json.dumps({
        "benchmark": "tune_speed", "baseline": args.baseline, "configurations": trials,
        "items": args.items, "simulations": args.simulations,
        "baseline_command_seconds": round(base["command"], 3),
        "baseline_search_seconds": round(base["search"], 3),
        "command_seconds": round(current["command"], 3),
        "search_seconds": round(current["search"], 3),
        "floor_seconds": round(floor_s, 3),
        "command_speedup": round(command_speedup, 2), "search_speedup": round(search_speedup, 2),
        "search_vs_floor": round(current["search"] / floor_s, 2),
        "same_best": same_best,
        "target_met": command_speedup >= 3 and search_speedup >= 10,
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
