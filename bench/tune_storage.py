"""`muxlang tune` with a shared Optuna study on PostgreSQL against the in-memory study.

The whole exhaustive GSM8K search of examples/zeroeval-gsm8k/tune.mux (2,046 configurations,
split 0.5, split seed 0) is run through the real command line, each run timed from process start
to exit:

* in memory (no ``--storage``): the baseline;
* one worker with ``--storage URL --study NAME`` (a fresh study);
* with ``--workers 2``, also two workers started together on another fresh study (timed until
  both have exited).

The JSON results must agree with the in-memory run: ``identical_best`` compares the winner (pool,
rule, validation and test accuracy), ``identical_result`` the whole result object except the study
name. The studies are deleted afterwards. When PostgreSQL cannot be reached the benchmark says so
and exits 0.

Last line: one JSON object with ``memory_seconds``, ``postgres_seconds``, ``ratio``
(postgres / memory), ``identical_best``, ``identical_result`` and, with ``--workers 2``,
``postgres_two_workers_seconds``, ``two_workers_ratio``, ``two_workers_trials``.

    .venv/bin/python bench/tune_storage.py [--storage URL] [--workers 1|2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "zeroeval-gsm8k"
DEFAULT_URL = os.environ.get("MUXLANG_TEST_POSTGRES",
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def reachable(url: str) -> str | None:
    """None when the server answers, else why not (one line)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as cx:
            cx.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as error:  # server down, driver missing, bad URL
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def muxlang(*args: str) -> list[str]:
    return [sys.executable, "-m", "muxlang", *args]


def tune_args(store: Path, *extra: str) -> list[str]:
    return muxlang("tune", str(EXAMPLE / "tune.mux"), "--store", str(store),
                   "--dataset", "zeroeval-gsm8k", "--split", "0.5", "--split-seed", "0",
                   "--json", *extra)


def timed(commands: list[list[str]]) -> tuple[float, list[dict]]:
    """Start the commands together; seconds until the last exits, and their JSON outputs."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    outs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - start
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.exit(f"tune failed ({p.returncode}): {err.strip()}")
    return seconds, [json.loads(out) for out, _ in outs]


def best_of(result: dict) -> tuple:
    b = result["best"]
    return (b["pool"], b["rule"], b["val_accuracy"], b["test_accuracy"])


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("study",)}


def delete_study(url: str, name: str) -> None:
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default=DEFAULT_URL, help="SQLAlchemy URL of the server")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1,
                        help="2: also time two workers sharing one study")
    args = parser.parse_args()

    why = reachable(args.storage)
    if why is not None:
        print(f"PostgreSQL is not reachable at {args.storage}: {why}; nothing measured")
        print(json.dumps({"skipped": True, "reason": why}))
        return

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "gsm8k.sqlite"
        subprocess.run(muxlang("import", str(EXAMPLE / "zeroeval-gsm8k-samples.jsonl.gz"),
                               "--questions", str(EXAMPLE / "zeroeval-gsm8k-questions.jsonl"),
                               "--store", str(store)),
                       cwd=ROOT, check=True, capture_output=True)
        studies = []
        try:
            memory_s, (memory,) = timed([tune_args(store)])
            print(f"in memory:             {memory_s:7.2f} s  ({memory['trials']} trials)")
            study = f"bench-tune-storage-{uuid.uuid4().hex[:10]}"
            studies.append(study)
            pg_s, (pg,) = timed([tune_args(store, "--storage", args.storage, "--study", study)])
            print(f"PostgreSQL, 1 worker:  {pg_s:7.2f} s  ({pg['trials']} trials, "
                  f"{pg_s / memory_s:.1f}x in memory)")
            summary = {"memory_seconds": round(memory_s, 2), "postgres_seconds": round(pg_s, 2),
                       "ratio": round(pg_s / memory_s, 2),
                       "identical_best": best_of(pg) == best_of(memory),
                       "identical_result": comparable(pg) == comparable(memory)}
            if args.workers == 2:
                study2 = f"bench-tune-storage-{uuid.uuid4().hex[:10]}"
                studies.append(study2)
                two_s, outs = timed([tune_args(store, "--storage", args.storage, "--study",
                                               study2) for _ in range(2)])
                trials = outs[0]["trials"]
                print(f"PostgreSQL, 2 workers: {two_s:7.2f} s  ({trials} trials in the study, "
                      f"{two_s / memory_s:.1f}x in memory)")
                summary.update({"postgres_two_workers_seconds": round(two_s, 2),
                                "two_workers_ratio": round(two_s / memory_s, 2),
                                "two_workers_trials": trials,
                                "identical_best": summary["identical_best"] and all(
                                    best_of(o) == best_of(memory) for o in outs)})
        finally:
            for name in studies:
                delete_study(args.storage, name)
    summary.update({"configurations": memory["space_size"], "python": platform.python_version(),
                    "cpus": os.cpu_count()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
