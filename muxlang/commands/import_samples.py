"""``muxlang import SAMPLES.jsonl[.gz] --questions QUESTIONS.jsonl [--dataset NAME]``.

Recorded model outputs (ZeroEval format: ``{"id", "model", "sample", "temperature", "text"}`` with
a questions file ``{"id", "question", "answer"}``) into the store, as a dataset (the questions)
and samples replayable by a spec whose backend has ``kind = replay`` and whose model ``id`` is the
recorded model name. All lines are checked first; a bad one is reported as FILE:LINE with the
field, and nothing of the import is written. Importing the same files again changes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", metavar="SAMPLES.jsonl[.gz]",
                        help='JSON lines {"id", "model", "sample", "temperature", "text"}')
    parser.add_argument("--questions", required=True, metavar="QUESTIONS.jsonl",
                        help='JSON lines {"id", "question", "answer"}: the dataset')
    parser.add_argument("--dataset", metavar="NAME",
                        help="dataset name in the store (default: from the questions file name, "
                             "e.g. zeroeval-gsm8k-questions.jsonl -> zeroeval-gsm8k)")
    parser.add_argument("--store", metavar="URL",
                        help="store URL or SQLite path (default: $MUXLANG_STORE, else "
                             "./muxlang.sqlite)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from muxlang.store import Store, import_samples

    store = Store(args.store)
    try:
        result = import_samples(store, args.samples, args.questions, args.dataset)
    finally:
        store.close()
    if args.json:
        print(json.dumps({
            "store": store.display_url, "dataset": result.dataset,
            "dataset_hash": result.dataset_hash, "items": result.items,
            "samples_read": result.samples_read, "samples_written": result.samples_written,
            "models": result.models, "seconds": round(result.seconds, 3)}, sort_keys=True))
        return 0
    already = result.samples_read - result.samples_written
    print(f"imported {result.samples_read} samples of {len(result.models)} models on dataset "
          f"'{result.dataset}' ({result.items} items) into {store.display_url} in "
          f"{result.seconds:.1f}s: {result.samples_written} new"
          + (f", {already} already stored" if already else ""))
    width = max(len(m) for m in result.models)
    for model, count in sorted(result.models.items()):
        print(f"  {model:<{width}}  {count} samples", file=sys.stdout)
    return 0
