"""``muxlang import SAMPLES.jsonl[.gz] --questions QUESTIONS.jsonl [--dataset NAME]``.

Recorded model outputs (ZeroEval format: ``{"id", "model", "sample", "temperature", "text"}`` with
a questions file ``{"id", "question", "answer"}``) into the store, as a dataset (the questions)
and samples replayable by a spec whose backend has ``kind = replay`` and whose model ``id`` is the
recorded model name. All lines are checked first; a bad one is reported as FILE:LINE with the
field, and nothing of the import is written. Importing the same files again changes nothing; a
sample stored with a different text under the same key (model, temperature, question, sample
index) is a conflict reported at its line, and nothing is written, unless ``--replace`` is given.
A sample line may also give ``"cost"`` (USD it cost): kept as its cost, which ``eval`` and
``tune`` prefer to the spec's prices; one that is not a cost is imported as none, with a warning.
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
    parser.add_argument("--replace", action="store_true",
                        help="replace stored samples whose text differs from this file's (same "
                             "model, temperature, question and sample index); without it such a "
                             "conflict is an error and nothing is imported")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from muxlang.store import Store, import_samples

    store = Store(args.store)
    try:
        result = import_samples(store, args.samples, args.questions, args.dataset,
                                replace=args.replace)
    finally:
        store.close()
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "store": store.display_url, "dataset": result.dataset,
            "dataset_hash": result.dataset_hash, "items": result.items,
            "samples_read": result.samples_read, "samples_written": result.samples_written,
            "samples_replaced": result.samples_replaced, "notes": result.notes,
            "models": result.models, "seconds": round(result.seconds, 3)}, sort_keys=True))
        return 0
    new = result.samples_written - result.samples_replaced
    already = result.samples_read - result.samples_written
    print(f"imported {result.samples_read} samples of {len(result.models)} models on dataset "
          f"{cell(result.dataset, 80)!r} ({result.items} items) into {store.display_url} in "
          f"{result.seconds:.1f}s: {new} new"
          + (f", {result.samples_replaced} replaced" if result.samples_replaced else "")
          + (f", {already} already stored" if already else ""))
    names = {model: cell(model) for model in result.models}
    width = max(len(name) for name in names.values())
    for model, count in sorted(result.models.items()):
        print(f"  {names[model]:<{width}}  {count} samples", file=sys.stdout)
    return 0


def cell(text: str, width: int = 60) -> str:
    """A table cell: at most ``width`` characters (a 1M-character model name must not pad every
    row of the table to a megabyte)."""
    return text if len(text) <= width else text[:width - 1] + "…"
