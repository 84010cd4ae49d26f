"""Evaluation figures against hand-worked cases (docs: muxlang/evaluation.py)."""
from __future__ import annotations

import json
import tempfile
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs  # `st` names a store here

from muxlang.errors import MuxError
from muxlang.evaluation import evaluate
from muxlang.lang import check_text
from muxlang.store import Store, import_samples


def spec_for(models: dict[str, tuple[str, float | None, int]], rule: str = "slm_mux",
             tie_break: str = "accuracy", validation: str | None = None, extra: str = "",
             adaptive: str = "off"):
    """models: name -> (recorded id, typed accuracy or None, k in the pool)."""
    parts = ["backend rec {\n  kind = replay\n}\n"]
    for name, (mid, acc, _) in models.items():
        parts.append(f'model {name} {{\n  backend = rec\n  id = "{mid}"\n  temperature = 0\n'
                     + (f"  accuracy = {acc}\n" if acc is not None else "") + "}\n")
    parts.append('task t {\n  user = "{question}"\n  extract = final_number\n'
                 '  equivalence = numeric\n  gold = "answer"\n}\n')
    pool = ", ".join(f"{name} * {k}" for name, (_, _, k) in models.items() if k)
    parts.append(f"mux m {{\n  task = t\n  pool = [{pool}]\n  rule = {rule}\n"
                 f"  tie_break = {tie_break}\n  adaptive = {adaptive}\n"
                 + (f'  validation = "{validation}"\n' if validation else "") + "}\n")
    parts.append(extra)
    return check_text("".join(parts), "tiny.mux")


def store_with(tmp_path: Path, gold: dict[str, str], answers: dict[str, dict[str, list]],
               name: str = "tiny") -> Store:
    """answers: model id -> item -> list of numbers (None = unreadable text)."""
    q = tmp_path / f"{name}-questions.jsonl"
    q.write_text("".join(json.dumps({"id": i, "question": f"question {i}", "answer": g}) + "\n"
                         for i, g in gold.items()))
    lines = []
    for model, per_item in answers.items():
        for item, values in per_item.items():
            for index, value in enumerate(values):
                text = "I do not know." if value is None else f"Working...\n#### {value}"
                lines.append(json.dumps({"id": item, "model": model, "sample": index,
                                         "temperature": 0.0, "text": text}))
    s = tmp_path / f"{name}-samples.jsonl"
    s.write_text("\n".join(lines) + "\n")
    st = Store(str(tmp_path / "eval.sqlite"))
    import_samples(st, s, q, dataset=name)
    return st


GOLD = {"q1": "1", "q2": "2", "q3": "3", "q4": "4"}
HAND = {
    "A": {"q1": [1, 1, 1], "q2": [5, 5, 2], "q3": [9, 9, 9], "q4": [None, None, None]},
    "B": {"q1": [2, 2, 2], "q2": [2, 2, 7], "q3": [3, 8, None], "q4": [6, 6, 6]},
    "C": {"q1": [1, 2, 3], "q2": [2, 2, 2], "q3": [3, 3, 4], "q4": [4, 6, None]},
}


def test_hand_worked_three_models(tmp_path):
    # q1: A,B both fully consistent -> tie -> A (acc .9) right; AF: 1 and 2 four votes each,
    #     1's best voter is A (.9) -> right; contradiction (B consistently wrong, A right).
    # q2: C consistent (1.0) -> 2 right; AF 2 (6 votes) right; A's majority 5 wrong.
    # q3: A consistent 9 -> wrong; AF: 9 and 3 three votes each, 9's voter A (.9) beats
    #     3's best voter B (.8) -> wrong; union: C's top is 3; contradiction (A wrong, C right).
    # q4: A unreadable; B consistent 6 -> wrong; AF 6 wrong; union: C ties 4/6 -> its top answer
    #     is the one sampled first, "4" -> right; contradiction (B consistently wrong, C right).
    st = store_with(tmp_path, GOLD, HAND)
    spec = spec_for({"a": ("A", 0.9, 3), "b": ("B", 0.8, 3), "c": ("C", 0.5, 3)})
    report = evaluate(st, spec, spec.muxes["m"], "tiny")
    # Single-Best draws 1 of A's 3 samples: that is resampled (100 trials by default); every
    # other figure uses all 3 samples of every model and is the same in every trial
    assert report["trials"] == 100 and report["resampled"]
    sb = report["details"]["single_best"]
    assert abs(sb["accuracy"] - (1 + 1 / 3) / 4) < 4 * sb["se"] and sb["se"] > 0
    # one-sample accuracy: a = (3/3 + 1/3) / 4, b = (2/3 + 1/3) / 4, c = (1/3 + 1 + 2/3 + 1/3) / 4
    assert report["per_model"] == pytest.approx({"a": 4 / 12, "b": 3 / 12, "c": 7 / 12})
    baselines = dict(report["baselines"])
    del baselines["single_best"]
    assert baselines == pytest.approx({
        "single_best_sc": 0.25, "agent_forest": 0.5, "slm_mux": 0.5, "union": 1.0,
        "oracle_any_sample": 1.0})
    assert report["details"]["slm_mux"]["se"] == 0.0
    assert report["contradiction"] == pytest.approx(0.75)
    assert report["mux"]["accuracy"] == pytest.approx(0.5)
    assert report["details"]["single_best"]["model"] == "a"
    assert report["validation"]["source"] == "spec (typed accuracy)"
    assert report["models"]["a"]["unreadable"] == pytest.approx(3 / 12)
    assert report["models"]["b"]["unreadable"] == pytest.approx(1 / 12)


def test_tie_break_by_order_changes_agent_forest_ties(tmp_path):
    # pool [c, b, a]. With accuracies, majority ties go to the best voter: q1 "1" (A .9) beats
    # "2" (B .8) -> right; q3 "9" (A) beats "3" (B) -> wrong: 2/4. By order, ties go to the
    # answer voted first: q1 C's "1" -> right, q3 C's "3" -> right; q4 "6" -> wrong: 3/4.
    st = store_with(tmp_path, GOLD, HAND)
    models = {"c": ("C", 0.5, 3), "b": ("B", 0.8, 3), "a": ("A", 0.9, 3)}
    by_accuracy = spec_for(models)
    report = evaluate(st, by_accuracy, by_accuracy.muxes["m"], "tiny")
    assert report["baselines"]["agent_forest"] == pytest.approx(0.5)
    spec = spec_for(models, tie_break="order")
    report = evaluate(st, spec, spec.muxes["m"], "tiny")
    assert report["validation"]["source"].startswith("pool order")
    assert report["baselines"]["agent_forest"] == pytest.approx(0.75)


def test_single_best_follows_validation_from_the_store(tmp_path):
    # on a validation dataset C is best, so Single-Best is C (and beats the typed accuracies)
    st = store_with(tmp_path, GOLD, HAND)
    val_gold = {"v1": "1", "v2": "2"}
    val = {"A": {"v1": [0, 0, 0], "v2": [0, 0, 0]}, "B": {"v1": [0, 0, 0], "v2": [2, 0, 0]},
           "C": {"v1": [1, 1, 1], "v2": [2, 2, 2]}}
    st.close()
    st = store_with(tmp_path, val_gold, val, name="val")
    spec = spec_for({"a": ("A", 0.9, 3), "b": ("B", 0.8, 3), "c": ("C", 0.5, 3)},
                    validation="val")
    report = evaluate(st, spec, spec.muxes["m"], "tiny", trials=1)
    assert report["validation"]["source"] == "store: dataset val"
    assert report["validation"]["accuracies"] == pytest.approx({"a": 0.0, "b": 1 / 6, "c": 1.0})
    assert report["details"]["single_best"]["model"] == "c"
    # C draws one sample: q1 1/3 right, q2 always, q3 2/3, q4 1/3 -> 7/12 expected; one trial
    assert report["trials"] == 1 and report["resampled"]
    # C's majorities: q1 tie 1/2/3 -> smallest "1" right, q2 right, q3 right, q4 tie 4/6 -> "4"
    assert report["baselines"]["single_best_sc"] == pytest.approx(1.0)
    with pytest.raises(MuxError, match="no dataset 'nope'"):
        evaluate(st, spec, spec.muxes["m"], "tiny", validation="nope")


def test_resampling_matches_the_exact_expectation(tmp_path):
    # one model, 4 stored samples [1, 1, 2, 2], gold 1, k = 2: of the 6 pairs, {2,2} is wrong,
    # {1,1} right, and the 4 mixed pairs tie -> the one drawn first, "1" half the time: 3/6.
    # (The smallest-key tie-break made it 5/6: "1" sorts first.)
    st = store_with(tmp_path, {"q": "1"}, {"A": {"q": [1, 1, 2, 2]}})
    spec = spec_for({"a": ("A", None, 2)})
    pairs = list(combinations([1, 1, 2, 2], 2))
    exact = sum(1.0 if pair == (1, 1) else 0.5 if 1 in pair else 0.0 for pair in pairs) / 6
    assert exact == pytest.approx(3 / 6)
    report = evaluate(st, spec, spec.muxes["m"], "tiny", trials=2000, seed=7)
    assert report["resampled"] and report["trials"] == 2000
    d = report["details"]["single_best_sc"]
    assert abs(d["accuracy"] - exact) < 4 * d["se"] and d["se"] > 0
    # Single-Best draws one sample uniformly: 1/2, the exact per-model figure (2 of 4 right)
    sb = report["details"]["single_best"]
    assert abs(sb["accuracy"] - 0.5) < 4 * sb["se"]
    assert report["per_model"]["a"] == pytest.approx(0.5)
    again = evaluate(st, spec, spec.muxes["m"], "tiny", trials=2000, seed=7)
    assert again["baselines"] == report["baselines"]  # seeded: reproducible
    other = evaluate(st, spec, spec.muxes["m"], "tiny", trials=50, seed=8)
    assert other["trials"] == 50


def test_too_few_stored_samples_is_a_clear_error(tmp_path):
    st = store_with(tmp_path, {"q": "1", "r": "2"}, {"A": {"q": [1, 1], "r": [2]}})
    spec = spec_for({"a": ("A", None, 2)})
    with pytest.raises(MuxError, match=r"draws 2 sample\(s\) per item but 1 of 2 items .*'r' has 1"):
        evaluate(st, spec, spec.muxes["m"], "tiny")
    spec = spec_for({"a": ("Nobody", None, 1)})
    with pytest.raises(MuxError, match="check the model id"):
        evaluate(st, spec, spec.muxes["m"], "tiny")


def test_costs_from_recorded_tokens(tmp_path):
    # samples collected by a live backend carry tokens; eval prices them per question
    from muxlang.prompts import render
    from muxlang.samples import SampleKey, prompt_hash
    from muxlang.store import NewSample, load_dataset_file

    q = tmp_path / "c-questions.jsonl"
    q.write_text(json.dumps({"id": "x", "question": "1+1?", "answer": "2"}) + "\n")
    spec = check_text('''
backend live {
  kind = openai
  url = "http://127.0.0.1:9/v1"
}
model a {
  backend = live
  id = "a-1b"
  input_price = 1
  output_price = 2
}
model b {
  backend = live
  id = "b-1b"
}
task t {
  user = "Q: {question}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}
mux m {
  task = t
  pool = [a * 2, b]
}
''', "c.mux")
    st = Store(str(tmp_path / "c.sqlite"))
    info = load_dataset_file(st, q)
    record = st.items(info)[0].record
    messages = render(spec.tasks["t"], record)
    ka = SampleKey.for_model(spec.models["a"], messages)
    kb = SampleKey.for_model(spec.models["b"], messages)
    st.put_samples([NewSample(ka, 0, "#### 2", 100, 10), NewSample(ka, 1, "#### 3", 100, 30),
                    NewSample(kb, 0, "#### 2", 50, 50)])
    report = evaluate(st, spec, spec.muxes["m"], info)
    assert report["per_model"] == pytest.approx({"a": 0.5, "b": 1.0})
    # a: 120 tokens/sample at $1 in / $2 out per million; b: 100 tokens, no price
    assert report["models"]["a"]["cost_per_sample"] == pytest.approx((100 * 1 + 20 * 2) / 1e6)
    assert report["mux"]["tokens_per_question"] == pytest.approx(2 * 120 + 100)
    assert report["mux"]["cost_per_question"] == pytest.approx(2 * 140 / 1e6)
    # slm_mux: a splits 2/3 (s = .5), b is consistent (s = 1) -> b's "2": right
    assert report["baselines"]["slm_mux"] == 1.0


def test_cascade_and_nested_mux_hand_worked(tmp_path):
    st = store_with(tmp_path, GOLD, HAND)
    extra = '''
mux first {
  task = t
  pool = [a * 3]
}
mux second {
  task = t
  pool = [c * 3]
}
cascade escalate {
  steps = [first, second]
  threshold = 0.9
}
mux inner {
  task = t
  pool = [a * 3, c * 3]
  accuracy = 0.95
}
mux outer {
  task = t
  pool = [inner, b * 3]
}
'''
    spec = spec_for({"a": ("A", 0.9, 3), "b": ("B", 0.8, 3), "c": ("C", 0.5, 3)}, extra=extra)
    # cascade: q1 A consistent (1, right); q2 A 2/3 < .9 -> C: 2 right; q3 A consistent 9 wrong;
    # q4 A unreadable -> C: 4/6 tie -> "4", the last step answers: right. 3/4, half at each step.
    report = evaluate(st, spec, spec.cascades["escalate"], "tiny", trials=5)
    assert report["engine"] == "plain" and report["mux"]["structured"]
    assert report["mux"]["accuracy"] == pytest.approx(0.75) and report["mux"]["se"] == 0
    assert report["mux"]["answered_at_step"] == pytest.approx([0.5, 0.5])
    assert [p["model"] for p in report["pool"]] == ["a", "c"]
    # nested: inner is one member whose answer carries its own confidence (typed accuracy .95):
    # q1 A's 1 (s 1), q2 C's 2 (s 1), q3 A's 9 (s 1), q4 C's tie 4/6 -> "4" sampled first (s 1/3).
    # B is fully consistent on q1 (2), losing the tie to inner's accuracy, and on q4 (6), beating
    # inner's 1/3: right on q1, q2 only
    report = evaluate(st, spec, spec.muxes["outer"], "tiny", trials=5)
    assert report["mux"]["accuracy"] == pytest.approx(0.5)
    assert [(r["id"], r["answer"], r["model"], r["confidence"]) for r in report["records"]] == [
        ("q1", "1", "inner", 1.0), ("q2", "2", "inner", 1.0), ("q3", "9", "inner", 1.0),
        ("q4", "6", "b", 1.0)]
    assert report["mux"]["answered_at_step"] is None
    # the flat baselines run over every model the tree uses, here a, c and b
    assert sorted(p["model"] for p in report["pool"]) == ["a", "b", "c"]
    assert report["baselines"]["slm_mux"] == pytest.approx(0.5)


def test_replay_backend_finds_collected_samples(tmp_path):
    """A replay backend replays samples a live backend collected (same task prompt, same id)."""
    from muxlang.prompts import render
    from muxlang.samples import SampleKey
    from muxlang.store import NewSample, load_dataset_file

    task = '''
task t {
  user = "Q: {question}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}
mux m {
  task = t
  pool = [a * 2]
}
'''
    live = check_text('backend live {\n  kind = openai\n  url = "http://127.0.0.1:9/v1"\n}\n'
                      'model a {\n  backend = live\n  id = "a-1b"\n  temperature = 0.7\n}\n'
                      + task, "live.mux")
    replay = check_text('backend rec {\n  kind = replay\n}\n'
                        'model a {\n  backend = rec\n  id = "a-1b"\n}\n' + task, "replay.mux")
    q = tmp_path / "r-questions.jsonl"
    q.write_text("".join(json.dumps({"id": i, "question": f"{i}+{i}?", "answer": str(2 * i)}) + "\n"
                         for i in range(3)))
    st = Store(str(tmp_path / "r.sqlite"))
    info = load_dataset_file(st, q)
    for item in st.items(info):
        key = SampleKey.for_model(live.models["a"], render(live.tasks["t"], item.record))
        st.put_samples([NewSample(key, 0, f"#### {2 * int(item.key)}"),
                        NewSample(key, 1, "#### 99")])
    a = evaluate(st, live, live.muxes["m"], info)
    b = evaluate(st, replay, replay.muxes["m"], info)
    assert a["per_model"] == b["per_model"] == {"a": 0.5}
    assert a["baselines"] == b["baselines"]


def test_items_without_a_readable_gold_are_left_out_of_per_model_accuracy_too(tmp_path):
    # q3's gold "unknown" has no number: the baselines leave q3 out, and so must the per-model
    # accuracy, or a model's own accuracy disagrees with Single-Best on that very model
    # (it was 2/3 here against Single-Best's 1.0).
    gold = {"q1": "2", "q2": "4", "q3": "unknown"}
    answers = {"M1": {"q1": [2], "q2": [4], "q3": [7]},
               "M2": {"q1": [3], "q2": [4], "q3": [7]}}
    st = store_with(tmp_path, gold, answers)
    spec = spec_for({"one": ("M1", 0.9, 1), "two": ("M2", 0.5, 1)})
    report = evaluate(st, spec, spec.muxes["m"], "tiny")
    assert report["dataset"]["scored_items"] == 2
    assert report["per_model"] == pytest.approx({"one": 1.0, "two": 0.5})
    assert report["details"]["single_best"]["model"] == "one"
    assert report["baselines"]["single_best"] == pytest.approx(report["per_model"]["one"])
    assert report["models"]["one"]["items"] == 2
    assert any("no readable gold answer" in note for note in report["notes"])


ANSWER = hs.sampled_from([1, 2, 3]) | hs.none()  # few answers: ties are common; None unreadable


@hs.composite
def adaptive_cases(draw):
    """A small store (1-3 models, each with its own number of stored samples per item, a few
    more on some items when ``uneven``: the per-item engine then scores both policies) and a mux
    over some of its models drawing at most that many (often fewer: resampled trials)."""
    n_models = draw(hs.integers(1, 3))
    n_items = draw(hs.integers(1, 4))
    gold = {f"q{i}": draw(hs.sampled_from(["1", "2"])) for i in range(n_items)}
    uneven = draw(hs.booleans())
    answers, models = {}, {}
    for j in range(n_models):
        stored = draw(hs.integers(1, 5))
        answers[f"M{j}"] = {q: draw(hs.lists(ANSWER, min_size=stored,
                                             max_size=stored + (2 if uneven else 0)))
                            for q in gold}
        budget = draw(hs.integers(0 if j else 1, stored))  # 0: declared, not in the pool
        models[f"m{j}"] = (f"M{j}", draw(hs.none() | hs.sampled_from([0.5, 0.7])), budget)
    return (gold, answers, models, draw(hs.sampled_from(["slm_mux", "majority", "single"])),
            draw(hs.sampled_from(["accuracy", "order"])), draw(hs.integers(1, 4)),
            draw(hs.integers(0, 3)))


@settings(max_examples=60, deadline=None)
@given(adaptive_cases())
def test_adaptive_exact_answers_as_the_full_budget_on_the_same_draws(case):
    """``adaptive = exact`` promises the full budget's answer and member on the same samples in
    the same order. ``eval`` scores an adaptive mux record by record (``muxlang.semantics``) and a
    full-budget one on the vectorised simulator: both must read each trial's order from
    ``Simulator.draws``, or a resampled trial gives them different samples and the promise looks
    broken (48 of 400 crux-o test records differed, CodeLlama-7B drawing 5 of its 10, when the
    per-record engine drew its own). So per record, in every trial (the accuracy, all trials;
    the baselines, the same draws), exact answers as off, drawing no more samples."""
    gold, answers, models, rule, tie_break, trials, seed = case
    with tempfile.TemporaryDirectory() as tmp:
        store = store_with(Path(tmp), gold, answers)
        try:
            reports = {}
            for policy in ("off", "exact"):
                spec = spec_for(models, rule, tie_break, adaptive=policy)
                reports[policy] = evaluate(store, spec, spec.muxes["m"], "tiny", trials=trials,
                                           seed=seed)
        finally:
            store.close()
    off, exact = reports["off"], reports["exact"]
    assert ([(r["id"], r["answer"], r["model"]) for r in exact["records"]]
            == [(r["id"], r["answer"], r["model"]) for r in off["records"]])
    assert exact["mux"]["accuracy"] == off["mux"]["accuracy"]
    assert exact["mux"]["no_answer"] == off["mux"]["no_answer"]
    assert exact["baselines"] == off["baselines"]
    assert exact["mux"]["mean_samples"] <= off["mux"]["mean_samples"]
