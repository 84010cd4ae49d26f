"""adaptive = exact: samples saved for the same answers, on real recordings and live.

    .venv/bin/python bench/adaptive_savings.py

1. Replay on real recordings, through ``muxlang.semantics`` (what ``eval`` runs): for each pool,
   every item is decided at the full budget and under ``adaptive = exact`` on the same stored
   samples in sample order; prints the answers that differ (expected 0), the samples drawn per
   item under each, and the saving.
   - crux-o, CodeLlama-7B x 10 samples (CRUXEval's own generations; answers compared as exact
     strings): slm_mux and single over the one member;
   - ZeroEval GSM8K, the ten small models x 1 greedy sample: slm_mux, majority, single, with
     validation accuracies measured on the first half and scored on the second.
2. Live, against the scripted server (20 ms per request, loopback): 300 questions, 3 models x 5
   samples with per-model skills, ``muxlang``'s ``Session.run`` with adaptive off and exact:
   requests, samples and tokens sent, wall time, answers that differ (expected 0); on a server
   that takes one request per sample, and on one that draws n > 1 per request (the prompt
   billed once per request) with CoT-like and with long-prompt/short-answer shapes, each of
   those also under the old rule (rounds always halved) to show what counting the prompt saves.

The baseline of every figure is the full-budget run of the same pool in the same process. Ends
with one JSON line.
"""
from __future__ import annotations

import gzip
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from muxlang import ir, semantics  # noqa: E402
from muxlang.ir import Call  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples" / "zeroeval-gsm8k"


def _mux(models: dict[str, int], rule: str, adaptive: str,
         accuracies: dict[str, float] | None = None) -> ir.Mux:
    backend = ir.Backend("b", "replay")
    pool = [ir.PoolMember(ir.Model(name, backend, name, accuracy=(accuracies or {}).get(name)), k)
            for name, k in models.items()]
    return ir.Mux("m", ir.Task("t", "{question}"), pool, Call(rule), adaptive=adaptive)


def compare(items: list[dict[str, list]], models: dict[str, int], rule: str,
            accuracies: dict[str, float] | None = None, gold: list | None = None,
            policy: str = "exact") -> dict:
    """Full budget vs an adaptive policy over ``items`` (model -> keys in sample order)."""
    full_mux = _mux(models, rule, "off", accuracies)
    fast_mux = _mux(models, rule, policy, accuracies)
    differ = full_samples = fast_samples = full_right = fast_right = 0
    for i, drawn in enumerate(items):
        full = semantics.decide(full_mux, drawn)
        fast = semantics.decide(fast_mux, drawn)
        differ += (full.answer, full.decision.member) != (fast.answer, fast.decision.member)
        full_samples += sum(full.used.values())
        fast_samples += sum(fast.used.values())
        if gold is not None:
            full_right += full.answer == gold[i]
            fast_right += fast.answer == gold[i]
    n = len(items)
    out = {"rule": rule, "policy": policy, "items": n, "answers_differ": differ,
           "full_samples_per_item": full_samples / n, "adaptive_samples_per_item": fast_samples / n,
           "saving": 1 - fast_samples / full_samples}
    if gold is not None:
        out["accuracy_full"], out["accuracy_adaptive"] = full_right / n, fast_right / n
    return out


def crux_gold() -> list[str]:
    gold = {}
    for line in (SHARED / "crux-o-questions.jsonl").open():
        row = json.loads(line)
        gold[row["id"]] = row["answer"].strip()
    return [gold[i] for i in sorted(gold)]


def crux_items() -> list[dict[str, list]]:
    by_id: dict[str, list[tuple[int, str]]] = {}
    with gzip.open(SHARED / "crux-o-samples.jsonl.gz", "rt") as handle:
        for line in handle:
            row = json.loads(line)
            if row["model"] == "codellama-7b":
                by_id.setdefault(row["id"], []).append((row["sample"], row["text"].strip()))
    return [{"codellama": [text for _, text in sorted(rows)]} for _, rows in sorted(by_id.items())]


def gsm8k_items() -> tuple[list[dict[str, list]], dict[str, float], list[str]]:
    """Keys as the stdlib reads them: JSON 'answer' field, its final number."""
    from muxlang.stdlib.equivalence import numeric
    from muxlang.stdlib.extractors import json_field

    extract, key = json_field(field="answer", then="final_number"), numeric().key
    gold = {}
    for line in (EXAMPLES / "zeroeval-gsm8k-questions.jsonl").open():
        row = json.loads(line)
        gold[row["id"]] = key(re.split(r"####", row["answer"])[-1].strip())
    answers: dict[str, dict[str, str | None]] = {}
    with gzip.open(EXAMPLES / "zeroeval-gsm8k-samples.jsonl.gz", "rt") as handle:
        for line in handle:
            row = json.loads(line)
            if "72B" in row["model"]:
                continue
            answer = extract(row["text"])
            answers.setdefault(row["model"], {})[row["id"]] = (
                key(answer) if answer is not None else None)
    models = sorted(answers)
    ids = sorted(gold)
    half = len(ids) // 2
    accuracy = {m: sum(answers[m].get(i) == gold[i] for i in ids[:half]) / half for m in models}
    items = [{m: [answers[m].get(i)] for m in models} for i in ids[half:]]
    return items, accuracy, models


def synthetic_items(n: int = 1000) -> tuple[list[dict[str, list]], dict[str, int], str,
                                            dict[str, float], list[str]]:
    """3 models x 5 samples with skills 0.85 / 0.6 / 0.4 (wrong answers spread over 4)."""
    import random

    rnd = random.Random(7)
    skill = {"strong": 0.85, "mid": 0.6, "weak": 0.4}
    items = [{m: ["42" if rnd.random() < p else str(rnd.randrange(4)) for _ in range(5)]
              for m, p in skill.items()} for _ in range(n)]
    return items, {m: 5 for m in skill}, "slm_mux", skill, ["42"] * n


def live(questions: int = 300, batched: bool = False, prompt_words: int = 8,
         answer_words: int = 3, split_always: bool = False, rule: str = "slm_mux") -> dict:
    """3 models x 5 samples against the scripted server, adaptive off vs exact. ``batched``:
    the server draws a member's round in one request (``n > 1``, the prompt billed once per
    request); tokens are what its usage reports (words of prompt per request, of answer per
    sample). ``split_always``: rounds split as if every sample were its own request (the rule
    before rounds counted the prompt), for comparison."""
    import hashlib

    import muxlang
    from muxlang.runtime.backends import BackendClient
    from tests.support.scripted_server import ScriptedServer

    skill = {"id-strong": 0.85, "id-mid": 0.6, "id-weak": 0.4}
    padding = " ".join(["step"] * max(0, answer_words - 2))

    def answer(model: str, prompt: str, seed: int) -> str:
        digest = hashlib.sha256(f"{model}|{prompt}|{seed}".encode()).digest()
        right = digest[0] / 256 < skill[model]
        return f"{padding} #### {42 if right else digest[1] % 4}".strip()

    server = ScriptedServer(answer=answer, latency=0.02).start()
    context = " ".join(["context"] * max(0, prompt_words - 2))
    records = [{"id": i, "question": f"{context} question {i}".strip()} for i in range(questions)]
    saved = BackendClient.request_overhead
    if split_always:
        BackendClient.request_overhead = lambda self, model: 0.0
    out = {}
    try:
        for policy in ("off", "exact"):
            spec = muxlang.loads(
                f'backend b {{ kind = openai  url = "{server.url}/v1"  concurrency = 64  '
                f'n = {"true" if batched else "false"} }}\n'
                'model strong { backend = b  id = "id-strong"  accuracy = 0.85 }\n'
                'model mid { backend = b  id = "id-mid"  accuracy = 0.6 }\n'
                'model weak { backend = b  id = "id-weak"  accuracy = 0.4 }\n'
                'task t { user = "{question}" }\n'
                'mux m { task = t  pool = [strong * 5, mid * 5, weak * 5]  '
                f'rule = {rule}  adaptive = {policy} }}\n', f"{policy}.mux")
            server.clear_log()
            started = time.perf_counter()
            results = muxlang.Session().run(spec, records)
            seconds = time.perf_counter() - started
            sent = [r for r in server.requests if r.get("model", "").startswith("id-")]
            samples = sum(int((r.get("body") or {}).get("n") or 1) for r in sent)
            out[policy] = {"seconds": seconds, "requests": len(sent), "samples": samples,
                           "tokens": len(sent) * prompt_words + samples * answer_words,
                           "answers": [(r.answer, r.model) for r in results]}
    finally:
        BackendClient.request_overhead = saved
        server.stop()
    differ = sum(a != b for a, b in zip(out["off"]["answers"], out["exact"]["answers"]))
    row = {"questions": questions, "rule": rule, "batched": batched, "prompt_words": prompt_words,
           "answer_words": answer_words, "split_always": split_always, "answers_differ": differ}
    for key in ("samples", "requests", "tokens", "seconds"):
        for policy in ("off", "exact"):
            value = out[policy][key]
            row[f"{key}_{policy}"] = round(value, 3) if key == "seconds" else value
    row["saving"] = 1 - out["exact"]["samples"] / out["off"]["samples"]
    row["token_saving"] = 1 - out["exact"]["tokens"] / out["off"]["tokens"]
    return row


# live shapes: one request per sample; then n > 1 with CoT-like answers (prompt about as long as
# an answer) and with long prompts and short answers (CRUXEval-like), each also under the old
# rule that split every budget in halves whatever a request cost
LIVE_SHAPES = [
    {"batched": False, "prompt_words": 8, "answer_words": 3},
    {"batched": True, "prompt_words": 120, "answer_words": 150},
    {"batched": True, "prompt_words": 120, "answer_words": 150, "split_always": True},
    {"batched": True, "prompt_words": 600, "answer_words": 6},
    {"batched": True, "prompt_words": 600, "answer_words": 6, "split_always": True},
    {"batched": True, "prompt_words": 120, "answer_words": 150, "rule": "majority"},
    {"batched": True, "prompt_words": 120, "answer_words": 150, "rule": "majority",
     "split_always": True},
]


def main() -> None:
    report: dict = {"benchmark": "adaptive_savings"}
    crux, gold = crux_items(), crux_gold()
    report["crux_codellama_k10"] = [compare(crux, {"codellama": 10}, rule, gold=gold,
                                            policy=policy)
                                    for policy in ("exact", "delta(0.05)", "delta(0.1)")
                                    for rule in ("slm_mux",)]
    items, accuracy, models = gsm8k_items()
    pool = {m: 1 for m in models}
    report["gsm8k_ten_small_k1"] = [compare(items, pool, rule, accuracy)
                                    for rule in ("slm_mux", "majority", "single")]
    s_items, s_pool, _, s_acc, s_gold = synthetic_items()
    report["synthetic_3x5"] = [compare(s_items, s_pool, "slm_mux", s_acc, s_gold, policy)
                               for policy in ("exact", "delta(0.05)")]
    for name in ("crux_codellama_k10", "gsm8k_ten_small_k1", "synthetic_3x5"):
        for row in report[name]:
            shown = (f", accuracy {100 * row['accuracy_full']:.2f}% -> "
                     f"{100 * row['accuracy_adaptive']:.2f}%" if "accuracy_full" in row else "")
            print(f"{name:20s} {row['rule']:8s} {row['policy']:11s} {row['items']:5d} items: "
                  f"samples per item {row['full_samples_per_item']:.2f} -> "
                  f"{row['adaptive_samples_per_item']:.2f} ({100 * row['saving']:.1f}% fewer), "
                  f"answers differing: {row['answers_differ']}{shown}")
    report["live_3x5"] = runs = [live(**shape) for shape in LIVE_SHAPES]
    for run in runs:
        shape = ("one request per sample" if not run["batched"] else
                 f"n > 1, prompt {run['prompt_words']} / answer {run['answer_words']} tokens"
                 + (", rounds always halved" if run["split_always"] else ""))
        print(f"live 3x5 {run['rule']}, {run['questions']} questions, {shape}: samples {run['samples_off']} "
              f"-> {run['samples_exact']} ({100 * run['saving']:.1f}% fewer), requests "
              f"{run['requests_off']} -> {run['requests_exact']}, tokens {run['tokens_off']} -> "
              f"{run['tokens_exact']} ({100 * run['token_saving']:.1f}% fewer), wall "
              f"{run['seconds_off']:.2f} s -> {run['seconds_exact']:.2f} s, answers differing: "
              f"{run['answers_differ']}")
    report["exact_answers_differ"] = (sum(r["answers_differ"] for k in (
        "crux_codellama_k10", "gsm8k_ten_small_k1", "synthetic_3x5") for r in report[k]
        if r["policy"] == "exact") + sum(run["answers_differ"] for run in runs))
    # the most an adaptive run's tokens exceeded the full budget's (< 0: it saved on every shape)
    report["live_worst_token_change"] = max(run["tokens_exact"] / run["tokens_off"] - 1
                                            for run in runs if not run["split_always"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
