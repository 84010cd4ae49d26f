"""Helpers for the optimizer tests: hand-made and synthetic stores, and a small loader for the
shared ZeroEval recordings that needs no store."""
from __future__ import annotations

import gzip
import json
import re

import numpy as np

from muxlang.votes import StoredVotes
from tests.support.data import data_file



def synthetic_votes(n_items=200, n_models=4, k=5, n_answers=4, seed=0, unreadable=0.05,
                    skill=None, name="synthetic") -> StoredVotes:
    """Random store: model m answers right with probability skill[m], else a random wrong key."""
    rng = np.random.default_rng(seed)
    skill = skill or list(np.linspace(0.45, 0.8, n_models))
    models = [f"m{j}" for j in range(n_models)]
    items = [f"q{i}" for i in range(n_items)]
    gold = [str(rng.integers(0, n_answers)) for _ in items]
    votes = {}
    for j, m in enumerate(models):
        rows = []
        for i in range(n_items):
            item_skill = min(1.0, max(0.0, skill[j] + rng.normal(0, 0.25)))
            row = []
            for _ in range(k):
                u = rng.random()
                if u < unreadable:
                    row.append(None)
                elif rng.random() < item_skill:
                    row.append(gold[i])
                else:
                    row.append(str(rng.integers(0, n_answers + 2)))
            rows.append(row)
        votes[m] = rows
    return StoredVotes(
        dataset=name, items=items, models=models, votes=votes, gold=gold,
        input_tokens={m: 100.0 for m in models},
        output_tokens={m: 200.0 + 50 * j for j, m in enumerate(models)},
        price_input={m: 1e-7 * (j + 1) for j, m in enumerate(models)},
        price_output={m: 2e-7 * (j + 1) for j, m in enumerate(models)},
    )


# --- ZeroEval recordings ------------------------------------------------------------------------
_NUM = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def canon_number(text):
    if text is None:
        return None
    text = str(text).replace("$", "").replace("\\!", "").strip()
    found = _NUM.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


def canon_text(text):
    if text is None:
        return None
    text = str(text).strip().strip("$").replace(" ", "").replace("\\left", "").replace("\\right", "")
    text = re.sub(r"^\\boxed\{(.*)\}$", r"\1", text)
    text = text.replace("dfrac", "frac").replace("tfrac", "frac").rstrip(".")
    number = canon_number(text) if re.fullmatch(r"-?[\d,]*\.?\d+", text) else None
    return number if number is not None else (text or None)


def _answer_field(text):
    match = re.search(r"\"answer\"\s*:\s*(\"((?:[^\"\\]|\\.)*)\"|-?[\d.,]+)", text)
    if not match:
        return None
    if match.group(2) is not None:
        try:
            return json.loads('"' + match.group(2) + '"')
        except json.JSONDecodeError:
            return match.group(2)
    return match.group(1)


def load_zeroeval(task: str, models=None) -> StoredVotes:
    """task: 'gsm8k' or 'math-l5'. Keys: canonical numbers (gsm8k) or lightly normalised text."""
    canon = canon_number if task == "gsm8k" else canon_text
    questions = [json.loads(line) for line in
                 data_file(f"zeroeval-{task}-questions.jsonl").read_text().splitlines() if line]
    items = [q["id"] for q in questions]
    index = {q: i for i, q in enumerate(items)}
    votes: dict[str, list[list]] = {}
    out_tokens: dict[str, list[int]] = {}
    with gzip.open(data_file(f"zeroeval-{task}-samples.jsonl.gz"), "rt") as fh:
        for line in fh:
            rec = json.loads(line)
            m = rec["model"]
            if models is not None and m not in models:
                continue
            rows = votes.setdefault(m, [[] for _ in items])
            if rec["id"] in index:
                rows[index[rec["id"]]].append(canon(_answer_field(rec["text"] or "")))
                out_tokens.setdefault(m, []).append(len(rec["text"] or "") / 4)
    in_tokens = float(np.mean([len(q["question"]) / 4 + 60 for q in questions]))
    names = sorted(votes)
    return StoredVotes(
        dataset=f"zeroeval-{task}", items=items, models=names, votes=votes,
        gold=[canon(q["answer"]) for q in questions],
        input_tokens={m: in_tokens for m in names},
        output_tokens={m: float(np.mean(v)) for m, v in out_tokens.items()},
    )
