"""How fast is ``muxlang check`` — the command editors and pre-commit hooks run on every save?

Measures, in one run: the wall time of ``muxlang check specs/*.mux`` in a fresh process against
the bare interpreter start-up (``python -c pass``) as the baseline; which heavy libraries the check
path imports (it must import none); and the parse+check throughput of a large generated spec.
Last line: one JSON object with the figures.
"""
from __future__ import annotations

import glob
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("optuna", "sqlalchemy", "aiohttp", "math_verify", "sympy", "numpy", "networkx",
         "matplotlib")


def wall(argv: list[str], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=False, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "muxlang", "check", "-q",
         *sorted(glob.glob(str(ROOT / "specs" / "*.mux")))],
        capture_output=True, text=True, cwd=ROOT)
    names = {line.split("|")[-1].strip().split(".")[0]
             for line in result.stderr.splitlines() if line.startswith("import time:")}
    return sorted(n for n in HEAVY if n in names)


def big_spec(models: int) -> str:
    parts = ['backend b {\n  kind = openai\n  url = "http://127.0.0.1:1/v1"\n}\n',
             'task t {\n  user = "{question}"\n  equivalence = numeric\n}\n']
    for i in range(models):
        parts.append(f"model m{i} {{\n  backend = b\n  temperature = 0.3\n  seed = {i}\n}}\n")
    for i in range(0, models, 3):
        pool = ", ".join(f"m{j} * 3" for j in range(i, min(i + 3, models)))
        parts.append(f"mux x{i} {{\n  task = t\n  pool = [{pool}]\n}}\n")
    return "".join(parts)


def main() -> None:
    specs = sorted(glob.glob(str(ROOT / "specs" / "*.mux")))
    baseline = wall([sys.executable, "-c", "pass"])
    check = wall([sys.executable, "-m", "muxlang", "check", "-q", *specs])
    from muxlang.lang import check_text

    text = big_spec(3000)
    check_text(text, "warm.mux")
    start = time.perf_counter()
    check_text(text, "big.mux")
    seconds = time.perf_counter() - start
    lines = text.count("\n")
    figures = {
        "check_specs_seconds": round(check, 4),
        "python_startup_seconds": round(baseline, 4),
        "check_over_startup_ratio": round(check / baseline, 2),
        "heavy_imports_on_check_path": heavy_imports(),
        "big_spec_lines": lines,
        "big_spec_lines_per_second": round(lines / seconds),
    }
    print(f"muxlang check specs/*.mux: {check * 1000:.0f} ms (python start-up {baseline * 1000:.0f} ms,"
          f" ratio {check / baseline:.1f}x)")
    print(f"heavy imports on the check path: {figures['heavy_imports_on_check_path'] or 'none'}")
    print(f"parse+check of a {lines}-line spec: {seconds * 1000:.0f} ms "
          f"({figures['big_spec_lines_per_second']} lines/s)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
