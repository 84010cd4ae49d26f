"""eval on the shipped ZeroEval GSM8K data, against plain-Python computations done here."""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict

import pytest

from muxlang.evaluation import evaluate
from muxlang.lang import load_spec
from muxlang.store import load_votes
from store_paths import GSM8K_QUESTIONS, GSM8K_SAMPLES, GSM8K_SPEC


@pytest.fixture(scope="module")
def raw():
    gold = {}
    with open(GSM8K_QUESTIONS, encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            gold[r["id"]] = r["answer"]
    texts = defaultdict(dict)
    with gzip.open(GSM8K_SAMPLES, "rt", encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            texts[r["model"]][r["id"]] = r["text"]
    return gold, texts


@pytest.fixture(scope="module")
def spec():
    return load_spec(GSM8K_SPEC)


def stdlib_keys(spec, gold, texts):
    """Equivalence keys computed in a plain loop with the stdlib functions (no store)."""
    from muxlang.stdlib.registry import make_equivalence, make_extractor

    task = spec.muxes["small_ten"].task
    extract, eq = make_extractor(task.extract), make_equivalence(task.equivalence)
    keys = {m.id: {i: (lambda a: eq.key(a) if a is not None else None)(extract(t))
                   for i, t in per.items()} for m in spec.models.values()
            for per in [texts[m.id]]}
    gold_keys = {i: eq.key(g) for i, g in gold.items()}
    return keys, gold_keys


def test_per_model_accuracy_matches_a_plain_loop(gsm8k_store, spec, raw):
    gold, texts = raw
    report = evaluate(gsm8k_store, spec, spec.muxes["small_ten"], "zeroeval-gsm8k")
    keys, gold_keys = stdlib_keys(spec, gold, texts)
    by_id = {m.id: name for name, m in spec.models.items()}
    plain = {by_id[mid]: sum(per[i] is not None and per[i] == gold_keys[i] for i in gold) / len(gold)
             for mid, per in keys.items()}
    assert report["per_model"] == pytest.approx(plain, abs=1e-12)
    assert len(report["per_model"]) == 11 and report["dataset"]["items"] == 1319

    # and against a fully independent reader: the JSON "answer" field's last number, as floats
    def read(text):
        found = re.findall(r'"answer"\s*:\s*"?([^"\n}]*)', text)
        if not found:
            return None
        numbers = re.findall(r"-?\d[\d,]*\.?\d*", found[-1])
        return float(numbers[-1].replace(",", "").rstrip(".")) if numbers else None

    for mid, per in texts.items():
        independent = sum(read(per[i]) == float(g.replace(",", "")) for i, g in gold.items()) / len(gold)
        assert report["per_model"][by_id[mid]] == pytest.approx(independent, abs=0.01), mid


def test_pool_baselines_match_a_plain_loop(gsm8k_store, spec, raw):
    gold, texts = raw
    mux = spec.muxes["small_ten"]
    report = evaluate(gsm8k_store, spec, mux, "zeroeval-gsm8k")
    keys, gold_keys = stdlib_keys(spec, gold, texts)
    pool = [member.member.id for member in mux.pool]
    union = forest = contradiction = 0
    for i, g in gold_keys.items():
        answers = [keys[m][i] for m in pool]
        right = [a is not None and a == g for a in answers]
        union += any(right)
        counts = Counter(a for a in answers if a is not None)
        if counts:  # no accuracies: ties go to the answer voted first (pool order)
            forest += max(counts, key=counts.get) == g
        contradiction += any(answers[p] is not None and not right[p] and
                             any(right[q] for q in range(len(pool)) if q != p)
                             for p in range(len(pool)))
    n = len(gold)
    assert report["baselines"]["union"] == pytest.approx(union / n)
    assert report["baselines"]["oracle_any_sample"] == pytest.approx(union / n)
    assert report["baselines"]["agent_forest"] == pytest.approx(forest / n)
    assert report["contradiction"] == pytest.approx(contradiction / n)
    # no validation: Single-Best is the first pool model, and with one sample each SLM-MUX is the
    # first model that has a readable answer
    first = pool[0]
    assert report["baselines"]["single_best"] == pytest.approx(
        sum(keys[first][i] == g for i, g in gold_keys.items() if g is not None) / n)
    mux_right = 0
    for i, g in gold_keys.items():
        readable = [keys[m][i] for m in pool if keys[m][i] is not None]
        mux_right += bool(readable) and readable[0] == g
    assert report["baselines"]["slm_mux"] == pytest.approx(mux_right / n)


def test_load_votes_shape_and_cache(gsm8k_store, spec):
    mux = spec.muxes["small_ten"]
    votes = load_votes(gsm8k_store, spec, mux, "zeroeval-gsm8k")
    assert votes.models == [m.member.name for m in mux.pool]
    assert len(votes.items) == 1319 and len(votes.gold) == 1319
    assert all(len(votes.votes[m]) == 1319 and all(len(v) == 1 for v in votes.votes[m])
               for m in votes.models)
    assert votes.input_tokens == {}  # not recorded in the imports
    again = load_votes(gsm8k_store, spec, mux, "zeroeval-gsm8k")  # served from the cache
    assert again.votes == votes.votes and again.gold == votes.gold


def test_vectorised_and_plain_engines_agree(gsm8k_store, spec, monkeypatch):
    import muxlang.evaluation as evaluation

    mux = spec.muxes["small_ten"]
    fast = evaluate(gsm8k_store, spec, mux, "zeroeval-gsm8k", validation="zeroeval-gsm8k")
    assert fast["engine"] == "vectorised"

    def unavailable(*args, **kwargs):
        raise ImportError

    monkeypatch.setattr(evaluation, "simulate_fast", unavailable)
    plain = evaluate(gsm8k_store, spec, mux, "zeroeval-gsm8k", validation="zeroeval-gsm8k")
    assert plain["engine"] == "plain"
    assert plain["baselines"] == fast["baselines"]
    assert plain["contradiction"] == fast["contradiction"]
    assert plain["mux"]["no_answer"] == fast["mux"]["no_answer"]
