"""Issue 15 item 5: the cost a gateway reported for a sample is kept in the store (schema v6,
``samples.cost``) and ``eval`` and ``tune`` prefer it to the spec's prices — on SQLite and
PostgreSQL. The live path (a gateway's ``x-litellm-response-cost`` through ``run`` and
``collect``) is in ``tests/runtime/test_gateway.py``."""
from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import inspect

from muxlang.cli import main
from muxlang.samples import MAX_REPORTED_COST, SampleKey, checked_cost
from muxlang.simulator import Simulator, split_votes
from muxlang.store import NewSample, Store, import_samples, migrations
from muxlang.votes import StoredVotes

QUESTIONS = [{"id": f"q{i}", "question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(1, 7)]
SPEC = """
backend rec { kind = replay }
model one { backend = rec  id = "M1"  temperature = 0  input_price = 1  output_price = 2 }
model two { backend = rec  id = "M2"  temperature = 0 }
task t {
  user = "{question}"
  extract = final_number
  equivalence = numeric
}
mux duo { task = t  pool = [one, two] }
tune pick {
  mux = duo  candidates = [one, two]  samples = 0..1  trials = 4  simulations = 1
  objectives = [accuracy, cost]
}
"""


def sample_lines(costs: dict[str, list]) -> str:
    """One sample per model and question; ``costs[model][i]`` its "cost" (absent: the key
    left out)."""
    out = []
    for i, q in enumerate(QUESTIONS):
        for model in ("M1", "M2"):
            line = {"id": q["id"], "model": model, "sample": 0, "temperature": 0,
                    "text": f"#### {q['answer']}"}
            given = costs.get(model)
            if given is not None and given[i] is not ...:
                line["cost"] = given[i]
            out.append(json.dumps(line))  # NaN and Infinity as Python's json writes them
    return "\n".join(out) + "\n"


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    (tmp_path / "tiny-questions.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (tmp_path / "duo.mux").write_text(SPEC)
    return tmp_path


def stored_costs(url: str) -> dict[tuple[str, int], float | None]:
    from muxlang.store import schema as s

    with Store(url, must_exist=True) as store:
        with store.engine.connect() as conn:
            rows = conn.execute(s.samples.select()).mappings().all()
    return {(r["model"], r["id"]): r["cost"] for r in rows}


# ---- the rule: checked_cost and StoredVotes.cost_per_sample ------------------------------------
@pytest.mark.parametrize("value, kept", [
    (0.002, 0.002), (0, 0.0), ("0.0015", 0.0015), (" 2e-3 ", 0.002), (MAX_REPORTED_COST, 1000.0),
    ("abc", None), ("-1", None), (-0.5, None), ("nan", None), (math.nan, None), ("inf", None),
    ("1e999", None), ("9" * 400, None), (10 ** 400, None), (1e9, None), ("", None),
    (True, None), ([0.1], None), (None, None)])
def test_only_a_cost_is_a_cost(value, kept):
    assert checked_cost(value) == kept


def votes(**extra) -> StoredVotes:
    return StoredVotes("d", ["q0", "q1"], ["a", "b"], {"a": [["1"], ["2"]], "b": [["1"], ["3"]]},
                       ["1", "2"], input_tokens={"a": 100.0, "b": 50.0},
                       output_tokens={"a": 10.0, "b": 20.0}, **extra)


def test_a_reported_cost_is_preferred_to_prices_times_tokens():
    priced = dict(price_input={"a": 1e-6, "b": 1e-6}, price_output={"a": 2e-6, "b": 2e-6})
    plain = votes(**priced)
    assert plain.cost_source("a") == "prices"
    assert plain.cost_per_sample("a") == pytest.approx(100e-6 + 20e-6)
    both = votes(**priced, reported_cost={"a": 0.01})
    assert (both.cost_source("a"), both.cost_per_sample("a")) == ("gateway", 0.01)
    assert both.cost_source("b") == "prices"
    assert both.cost_of([("a", 3), ("b", 2)]) == pytest.approx(0.03 + 2 * 90e-6)
    assert both.cost_sources(["a", "b"]) == ("reported by the gateway for a; the spec's prices x "
                                             "stored tokens for b")
    # a reported $0 (a gateway may say so of a model it has no price for) does not hide a price...
    zero = votes(**priced, reported_cost={"a": 0.0})
    assert zero.cost_source("a") == "prices" and zero.cost_per_sample("a") > 0
    # ...and without a price it is the cost
    free = votes(reported_cost={"a": 0.0})
    assert (free.cost_source("a"), free.cost_per_sample("a")) == ("gateway", 0.0)
    # neither: unknown, not $0
    assert votes().cost_source("a") is None and votes().cost_of([("a", 1)]) is None


def test_reported_costs_make_the_cost_unit_usd_without_prices_and_survive_a_split():
    reported = votes(reported_cost={"a": 0.01, "b": 0.002})
    assert Simulator(reported, 2, 0).cost_unit == "usd"
    assert Simulator(votes(reported_cost={"a": 0.01}), 2, 0).cost_unit == "tokens"
    val, test = split_votes(reported, 0.5, 0)
    assert val.reported_cost == test.reported_cost == {"a": 0.01, "b": 0.002}


# ---- the store: a nullable column, what is not a cost kept as NULL ------------------------------
def test_costs_round_trip_and_what_is_not_a_cost_is_stored_as_null(store):
    key = SampleKey.make("gw", "m", {"temperature": 0}, "p" * 64)
    given = [0.002, 0, -1, math.nan, math.inf, 1e9, "abc", True, None]
    store.put_samples([NewSample(key, i, f"#### {i}", cost=cost) for i, cost in enumerate(given)]
                      + [NewSample(SampleKey.make("gw", "m", {}, "q" * 64), 0, None,
                                   error="HTTP 500", cost=0.5)])
    got = store.get_samples(key)
    assert [s.text for s in got] == [f"#### {i}" for i in range(len(given))]  # nothing lost
    assert [s.cost for s in got] == [0.002, 0.0] + [None] * 7
    failed, = store.get_samples(SampleKey.make("gw", "m", {}, "q" * 64))
    assert failed.cost is None  # a failed request has no reply to cost


def test_a_v5_store_is_read_as_it_is_and_migrates_to_v6_keeping_its_samples(store_url, files,
                                                                             capsys):
    old = Store(store_url, upgrade=False)
    assert old.upgrade(target=5) == (0, 5)
    with old.engine.connect() as conn:
        assert "cost" not in {c["name"] for c in inspect(conn).get_columns("samples")}
    # a writer of a v5 store (only tests make one now) stores no cost and fails on nothing
    (files / "s.jsonl").write_text(sample_lines({"M1": [0.01] * 6}))
    import_samples(old, files / "s.jsonl", files / "tiny-questions.jsonl")
    old.close()
    # a reader reads it as it is: no upgrade, no cost, the prices' figures as before
    assert main(["eval", "duo.mux", "--dataset", "tiny", "--json", "--store", store_url]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert models["one"]["cost_source"] is None  # imported recordings have no tokens
    with Store(store_url, must_exist=True) as reader:
        assert reader.version == 5 and not reader.has_costs
    # the first writer upgrades it; the samples stored before have no cost
    with Store(store_url) as store:
        assert store.version == migrations.LATEST == 6 and store.has_costs
        assert store.count_samples() == 12
    assert set(stored_costs(store_url).values()) == {None}
    # and what is imported now keeps its cost (a re-import of the same texts changes nothing)
    (files / "s2.jsonl").write_text(sample_lines({"M1": [0.01] * 6}).replace('"sample": 0',
                                                                              '"sample": 1'))
    with Store(store_url) as store:
        import_samples(store, files / "s2.jsonl", files / "tiny-questions.jsonl")
    costs = stored_costs(store_url)
    assert sorted(c for c in costs.values() if c is not None) == [0.01] * 6


def test_import_keeps_costs_and_imports_what_is_not_one_without_it(files, capsys):
    (files / "tiny-samples.jsonl").write_text(sample_lines({
        "M1": [0.01, 0.02, 0.03, 0.01, 0.02, 0.03],
        "M2": [0.004, "abc", -1, math.nan, 1e999, ...]}))  # 1e999: written as Infinity
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"]) == 0
    captured = capsys.readouterr()
    assert "12 new" in captured.out and "internal error" not in captured.err
    assert ("warning: tiny-samples.jsonl: field 'cost' on 4 line(s) (4, 6, 8, 10) is not a cost in "
            "USD (a number from 0 to 1000); those samples were imported without one"
            in captured.err)
    costs = sorted((c for c in stored_costs("muxlang.sqlite").values() if c is not None))
    assert costs == pytest.approx([0.004, 0.01, 0.01, 0.02, 0.02, 0.03, 0.03])

    assert main(["eval", "duo.mux", "--dataset", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    one, two = report["models"]["one"], report["models"]["two"]
    # one has prices but no tokens (recordings): the reported costs are what is known
    assert (one["cost_source"], one["cost_per_sample"]) == ("gateway", pytest.approx(0.02))
    # two: the mean over its samples that have a cost (one of six)
    assert (two["cost_source"], two["cost_per_sample"]) == ("gateway", pytest.approx(0.004))
    assert report["mux"]["cost_per_question"] == pytest.approx(0.024)
    assert report["details"]["single_best_sc"]["cost_per_question"] in (
        pytest.approx(0.02), pytest.approx(0.004))
    assert "cost per sample: reported by the gateway for one, two" in report["notes"]

    # tune's cost objective counts USD from them, and its notes say so
    assert main(["tune", "duo.mux", "--dataset", "tiny", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    note = "cost objective: USD per item, reported by the gateway for one, two"
    assert note in result["warnings"] and note in captured.err
    assert result["best"]["cost"] in (pytest.approx(0.02), pytest.approx(0.004),
                                      pytest.approx(0.024))
