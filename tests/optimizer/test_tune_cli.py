"""`muxlang tune` and `muxlang report` end to end on a hand-made store (SQLite)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from opt_helpers import synthetic_votes

from muxlang.cli import main
from muxlang.lang import load_spec
from muxlang.simulator import Simulator, split_votes
from muxlang.optimizer.tuned_spec import config_of_spec, redact_url

SPEC = """\
# a hand-made tuning spec
import std.gsm8k

backend rec {
  kind = replay   # recorded samples
}

model m0 { backend = rec  id = "m0"  temperature = 0.3 }
model m1 { backend = rec  id = "m1"  temperature = 0.3 }
model m2 { backend = rec  id = "m2"  temperature = 0.3 }
model m3 { backend = rec  id = "m3"  temperature = 0.3 }
model big { backend = rec  id = "big"  temperature = 0.3 }   # the reference

mux duo {
  task = gsm8k_json
  # the pool the tuner replaces
  pool = [m0 * 2,
          m1 * 2]   # a trailing comment
  tie_break = accuracy
}

tune search {
  mux         = duo
  candidates  = [m0, m1, m2, m3]
  samples     = 0..4
  pool_size   = 1..3
  rules       = [slm_mux, majority]
  objectives  = [accuracy]
  trials      = 40
  simulations = 16
  seed        = 3
}
"""


def write_zeroeval(votes, directory: Path, name: str) -> tuple[Path, Path]:
    questions = directory / f"{name}-questions.jsonl"
    samples = directory / f"{name}-samples.jsonl"
    with questions.open("w") as fh:
        for item, gold in zip(votes.items, votes.gold):
            fh.write(json.dumps({"id": item, "question": f"q {item}?", "answer": gold}) + "\n")
    with samples.open("w") as fh:
        for model in votes.models:
            for item, keys in zip(votes.items, votes.votes[model]):
                for j, key in enumerate(keys):
                    text = ("I do not know." if key is None else
                            json.dumps({"reasoning": "because", "answer": key}))
                    fh.write(json.dumps({"id": item, "model": model, "sample": j,
                                         "temperature": 0.3, "text": text}) + "\n")
    return samples, questions


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from muxlang.store import Store, import_samples

    d = tmp_path_factory.mktemp("store")
    votes = synthetic_votes(n_items=120, n_models=5, k=4, n_answers=4, seed=7,
                            skill=[0.5, 0.62, 0.58, 0.66, 0.8])
    votes.models = ["m0", "m1", "m2", "m3", "big"]
    votes.votes = dict(zip(votes.models, votes.votes.values()))
    val = type(votes)(**{**votes.__dict__})
    url = str(d / "s.sqlite")
    s = Store(url)
    try:
        import_samples(s, *write_zeroeval(val, d, "hand"), dataset="hand")
        other = synthetic_votes(n_items=80, n_models=5, k=4, n_answers=4, seed=8,
                                skill=[0.5, 0.62, 0.58, 0.66, 0.8])
        other.models = votes.models
        other.votes = dict(zip(votes.models, other.votes.values()))
        other.items = [f"t{i}" for i in range(len(other.items))]
        import_samples(s, *write_zeroeval(other, d, "handtest"), dataset="handtest")
    finally:
        s.close()
    spec = d / "tune.mux"
    spec.write_text(SPEC)
    return url, spec


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _tuned(capsys, source: Path, url: str, dataset: str, *extra: str) -> tuple[dict, Path]:
    """``muxlang tune SOURCE --json --out tuned.mux`` beside it: the result and the spec."""
    out = source.with_name("tuned.mux")
    code, stdout, err = _run(capsys, "tune", str(source), "--store", url, "--dataset", dataset,
                             "--json", "--out", str(out), *extra)
    assert code == 0, err
    return json.loads(stdout), out


def _votes(url, spec_path, dataset):
    from muxlang.store import Store, load_votes

    spec = load_spec(spec_path)
    s = Store(url)
    try:
        return spec, load_votes(s, spec, spec.muxes["duo"], dataset,
                                models=spec.tunes["search"].candidates)
    finally:
        s.close()


def test_tune_json_out_reparses_and_reevaluates(store, tmp_path, capsys):
    url, spec = store
    out = tmp_path / "sub" / "tuned.mux"
    code, stdout, err = _run(capsys, "tune", str(spec), "--store", url, "--dataset", "hand",
                             "--test", "handtest", "--json", "--out", str(out))
    assert code == 0, err
    result = json.loads(stdout)
    best = result["best"]
    assert set(best) >= {"pool", "rule", "val_accuracy", "test_accuracy"}
    assert 1 <= len(best["pool"]) <= 3 and all(1 <= b <= 4 for b in best["pool"].values())
    assert result["baselines"]["references"]["big"]["test_accuracy"] is not None
    # the tuned spec checks, keeps comments, and replays to the reported validation figure
    text = out.read_text()
    assert "# a trailing comment" in text and "# the pool the tuner replaces" in text
    assert "sha256:" in text and "objective:   accuracy" in text
    tuned = load_spec(out)
    config = config_of_spec(tuned, "duo")
    assert config.as_dict() == best["pool"] and config.rule == best["rule"]
    spec_obj, val = _votes(url, spec, "hand")
    sim = Simulator(val, 16, 3, models=[m.name for m in spec_obj.tunes["search"].candidates])
    assert sim.score(config).accuracy == best["val_accuracy"]


def test_tuned_spec_changes_only_pool_and_rule(store, tmp_path, capsys):
    url, spec = store
    out = tmp_path / "tuned.mux"
    code, stdout, _ = _run(capsys, "tune", str(spec), "--store", url, "--dataset", "hand",
                           "--split", "0.5", "--json", "--out", str(out), "--trials", "20")
    assert code == 0
    best = json.loads(stdout)["best"]
    text = out.read_text()
    body = text[text.index("# ---- end of tuning record") + len("# ---- end of tuning record\n"):]
    pool = "[" + ", ".join(f"{m} * {b}" for m, b in best["pool"].items()) + "]"
    expected = SPEC.replace("[m0 * 2,\n          m1 * 2]", pool)
    if best["rule"] != "slm_mux":
        expected = expected.replace("# a trailing comment\n",
                                    f"# a trailing comment\n  rule = {best['rule']}\n")
    assert body == expected
    # the split's validation half replays to the reported figure
    spec_obj, votes = _votes(url, spec, "hand")
    val, _ = split_votes(votes, 0.5, 0)
    sim = Simulator(val, 16, 3, models=[m.name for m in spec_obj.tunes["search"].candidates])
    assert sim.score(config_of_spec(load_spec(out), "duo")).accuracy == best["val_accuracy"]


def test_text_output_plots_and_report(store, tmp_path, capsys):
    url, spec = store
    result_file = tmp_path / "r.json"
    code, stdout, _ = _run(capsys, "tune", str(spec), "--store", url, "--dataset", "hand",
                           "--test", "handtest", "--objective", "accuracy,cost",
                           "--plot", str(tmp_path / "plots"), "--result", str(result_file))
    assert code == 0
    assert "best:" in stdout and "reference big" in stdout
    assert (tmp_path / "plots" / "pareto.png").stat().st_size > 1000
    code, stdout, _ = _run(capsys, "report", "--result", str(result_file), "--out",
                           str(tmp_path / "again"))
    assert code == 0 and (tmp_path / "again" / "samples.png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--tune", "serach"], "did you mean 'search'"),
    (["--split", "0.5", "--test", "handtest"], "either --test or --split"),
    (["--split", "1.5"], "between 0 and 1"),
    (["--dataset", "nope"], "'nope' is neither a dataset in store"),
    (["--trials", "0"], "at least 1"),
    (["--test", "hand"], "holds the same questions as --dataset hand"),
])
def test_user_mistakes_are_one_line_errors(store, capsys, argv, message):
    url, spec = store
    args = ["tune", str(spec), "--store", url]
    if "--dataset" not in argv:
        args += ["--dataset", "hand"]
    code, _, err = _run(capsys, *args, *argv)
    assert code == 1
    assert message in err and "Traceback" not in err


def test_datasets_may_be_given_as_the_questions_files(store, capsys):
    url, spec = store
    by_name = _run(capsys, "tune", str(spec), "--store", url, "--dataset", "hand",
                   "--test", "handtest", "--json")
    folder = spec.parent
    by_file = _run(capsys, "tune", str(spec), "--store", url,
                   "--dataset", str(folder / "hand-questions.jsonl"),
                   "--test", str(folder / "handtest-questions.jsonl"), "--json")
    assert by_name[0] == by_file[0] == 0, by_file[2]
    named, filed = json.loads(by_name[1]), json.loads(by_file[1])
    assert filed["best"] == named["best"]
    assert filed["dataset"]["content_sha256"] == named["dataset"]["content_sha256"]


def test_budget_range_beyond_the_store_is_one_clear_error(store, tmp_path, capsys):
    url, spec = store
    greedy = tmp_path / "greedy.mux"
    greedy.write_text(spec.read_text().replace("samples     = 0..4", "samples     = 5..8"))
    code, _, err = _run(capsys, "tune", str(greedy), "--store", url, "--dataset", "hand")
    assert code == 1 and "Traceback" not in err
    assert "samples = 5..8 needs at least 5 stored sample(s) per item" in err
    assert "m0, m1, m2, m3: 4" in err and "searching" not in err


def test_report_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = _run(capsys, "report", "--result", str(bad))
    assert code == 1 and "not a JSON tuning result" in err


def test_redact_url():
    assert redact_url("postgresql+psycopg://u:secret@db.example:5432/x?sslmode=require") == \
        "postgresql+psycopg://db.example:5432/x"
    assert "secret" not in redact_url("postgresql://u:secret@h/x")


def _trials_in(study: Path) -> int:
    """Trials an Optuna SQLite study holds (0 while its tables are being made)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{study}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def test_ctrl_c_says_how_to_resume_and_shows_no_optuna_noise(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "zeroeval-gsm8k"
    store = tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": str(root)}
    base = [sys.executable, "-m", "muxlang"]
    subprocess.run([*base, "import", str(example / "zeroeval-gsm8k-samples.jsonl.gz"),
                    "--questions", str(example / "zeroeval-gsm8k-questions.jsonl"),
                    "--store", str(store)], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*base, "tune", str(example / "tune.mux"), "--store", str(store), "--dataset",
         "zeroeval-gsm8k", "--split", "0.5", "--sampler", "tpe", "--trials", "100000",
         "--storage", str(tmp_path / "study.db"), "--study", "s", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # interrupt it inside the search (a fixed sleep could land in start-up on a loaded machine)
    study = tmp_path / "study.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if study.exists() and _trials_in(study) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume it" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "[W " not in err


def test_tune_searches_adaptive_exact_and_writes_it(store, tmp_path, capsys):
    """With ``adaptive = [off, exact]`` every pool is scored both ways: exact has the full
    budget's accuracy for fewer samples, so it wins the tie, and the tuned mux says so."""
    url, spec = store
    searched = spec.read_text().replace("  seed        = 3\n",
                                        "  seed        = 3\n  adaptive    = [off, exact]\n")
    # (slm_mux: a first member sure of its answer spares the others; majority with budgets of
    # 4 settles only when every vote is cast)
    searched = searched.replace("rules       = [slm_mux, majority]", "rules       = [slm_mux]")
    source = tmp_path / "adaptive.mux"
    source.write_text(searched)
    result, out = _tuned(capsys, source, url, "hand", "--sampler", "grid", "--trials", "5000")
    best = result["best"]
    assert best["adaptive"] == "exact"
    assert best["samples"] < sum(best["pool"].values())
    # the same pool drawn in full: the same accuracy, more samples
    spec_obj, val = _votes(url, source, "hand")
    sim = Simulator(val, 16, 3, models=[m.name for m in spec_obj.tunes["search"].candidates])
    tuned = config_of_spec(load_spec(out), "duo")
    assert tuned.adaptive == "exact" and tuned.as_dict() == best["pool"]
    full = sim.score(type(tuned)(tuned.pool, tuned.rule))
    assert sim.score(tuned).accuracy == full.accuracy == best["val_accuracy"]
    assert sim.score(tuned).samples == best["samples"] < full.samples
    assert "adaptive = exact" in out.read_text()
    # the space held both policies of every pool
    alone = tmp_path / "off.mux"
    alone.write_text(searched.replace("  adaptive    = [off, exact]\n", ""))
    assert result["space_size"] == 2 * json.loads(_run(
        capsys, "tune", str(alone), "--store", url, "--dataset", "hand", "--sampler", "grid",
        "--json", "--trials", "1")[1])["space_size"]


def test_tune_tries_delta_on_the_winners_pool_and_writes_what_it_chose(store, tmp_path,
                                                                         capsys):
    url, spec = store
    source = tmp_path / "delta.mux"
    source.write_text(SPEC.replace("  seed        = 3\n",
                                   "  seed        = 3\n  adaptive    = [exact, delta(0.3)]\n"))
    result, out = _tuned(capsys, source, url, "hand", "--test", "handtest")
    policies = result["policies"]
    assert [p["adaptive"] for p in policies] == ["exact", "delta(0.3)"]
    assert sum(p["chosen"] for p in policies) == 1 and all(p["trials"] == 10 for p in policies)
    chosen = next(p for p in policies if p["chosen"])
    best = result["best"]
    assert best["adaptive"] == chosen["adaptive"]
    if chosen["adaptive"] == "delta(0.3)":  # chosen only without a loss, for fewer samples
        assert chosen["val_accuracy"] >= policies[0]["val_accuracy"]
        assert chosen["samples"] < policies[0]["samples"]
    assert f"adaptive = {chosen['adaptive']}" in out.read_text()
    assert "record by record" in " ".join(result["warnings"])


def test_a_delta_that_loses_nothing_replaces_the_full_budget(tmp_path, capsys):
    """Models that repeat one answer per question: delta(0.2) stops after a quarter of each
    budget with the same answers, so it is chosen, and the winner's figures become its own."""
    from muxlang.store import Store, import_samples
    from muxlang.votes import StoredVotes

    items = [f"q{i}" for i in range(30)]
    gold = [str(i % 4) for i in range(30)]
    rows = {"m0": [[g if i % 10 < 7 else "9"] * 8 for i, g in enumerate(gold)],
            "m1": [[g if i % 10 < 5 else "8"] * 8 for i, g in enumerate(gold)]}
    votes = StoredVotes("same", items, ["m0", "m1"], rows, gold)
    url = str(tmp_path / "same.sqlite")
    store = Store(url)
    try:
        import_samples(store, *write_zeroeval(votes, tmp_path, "same"), dataset="same")
    finally:
        store.close()
    source = tmp_path / "same.mux"
    source.write_text(SPEC.replace("candidates  = [m0, m1, m2, m3]", "candidates  = [m0, m1]")
                      .replace("samples     = 0..4", "samples     = 8..8")
                      .replace("  seed        = 3\n",
                               "  seed        = 3\n  adaptive    = [off, delta(0.2)]\n"))
    result, out = _tuned(capsys, source, url, "same", "--split", "0.5")
    own, delta = result["policies"]
    assert (own["adaptive"], delta["adaptive"]) == ("off", "delta(0.2)")
    assert delta["chosen"] and not own["chosen"], result["policies"]
    assert delta["val_accuracy"] == own["val_accuracy"] and delta["samples"] < own["samples"]
    best = result["best"]
    assert (best["adaptive"], best["val_accuracy"], best["samples"]) == (
        "delta(0.2)", delta["val_accuracy"], delta["samples"])
    assert best["test_accuracy"] is not None
    assert "adaptive = delta(0.2)" in out.read_text()



def _delta_mux(tune_adaptive: str | None) -> str:
    """SPEC with mux duo saying adaptive = delta(0.3), candidates m0 and m1 drawn 8 times, and
    the tune block's adaptive list (None: left out, so the mux's own)."""
    text = (SPEC.replace("  tie_break = accuracy\n",
                         "  tie_break = accuracy\n  adaptive = delta(0.3)\n")
            .replace("candidates  = [m0, m1, m2, m3]", "candidates  = [m0, m1]")
            .replace("samples     = 0..4", "samples     = 8..8"))
    if tune_adaptive is not None:
        text = text.replace("  seed        = 3\n",
                            f"  seed        = 3\n  adaptive    = {tune_adaptive}\n")
    return text


def test_the_tuned_mux_keeps_a_listed_policy_and_says_when_its_own_was_not_tried(
        tmp_path, capsys):
    """The written policy is one tune measured and chose from the tune block's list. A mux
    saying delta(0.3) with no adaptive in the tune block (the list is its own policy) keeps
    delta(0.3) even though it loses accuracy against the full budget the search scored pools
    at: that budget is the yardstick, not a candidate. Listing off lets off win. A list that
    leaves the mux's own policy out replaces it untried, and the summary, the result and the
    tuned spec's header say so."""
    from muxlang.store import Store, import_samples
    from muxlang.votes import StoredVotes

    # every answer right by a majority of its 8 samples, but not by every sample: a policy
    # that stops after a few samples sometimes settles on the wrong one
    items = [f"q{i}" for i in range(30)]
    gold = [str(i % 4) for i in range(30)]
    rows = {"m0": [[g] * 5 + ["9"] * 3 if i % 2 else [g] * 8 for i, g in enumerate(gold)],
            "m1": [[g] * 4 + ["8"] * 4 if i % 3 else [g] * 8 for i, g in enumerate(gold)]}
    url = str(tmp_path / "mixed.sqlite")
    store = Store(url)
    try:
        import_samples(store, *write_zeroeval(StoredVotes("mixed", items, ["m0", "m1"], rows,
                                                          gold), tmp_path, "mixed"),
                       dataset="mixed")
    finally:
        store.close()

    # the tune block's adaptive defaults to the mux's own: [delta(0.3)]
    source = tmp_path / "own" / "delta.mux"
    source.parent.mkdir()
    source.write_text(_delta_mux(None))
    result, out = _tuned(capsys, source, url, "mixed")
    full, delta = result["policies"]
    assert (full["adaptive"], full["listed"], full["chosen"]) == ("off", False, False)
    assert (delta["adaptive"], delta["listed"], delta["chosen"]) == ("delta(0.3)", True, True)
    assert delta["val_accuracy"] < full["val_accuracy"]  # it loses, and is kept all the same
    best = result["best"]
    assert (best["adaptive"], best["val_accuracy"], best["samples"]) == (
        "delta(0.3)", delta["val_accuracy"], delta["samples"])
    assert "untried_adaptive" not in result
    assert load_spec(out).muxes["duo"].adaptive == "delta(0.3)"
    assert "adaptive=delta(0.3)" in out.read_text()  # the header's chosen configuration

    # listed with off: off is measured against it, and chosen
    source = tmp_path / "both" / "delta.mux"
    source.parent.mkdir()
    source.write_text(_delta_mux("[off, delta(0.3)]"))
    result, out = _tuned(capsys, source, url, "mixed")
    full, delta = result["policies"]
    assert (full["listed"], full["chosen"], delta["chosen"]) == (True, True, False)
    assert result["best"]["adaptive"] == "off" and "untried_adaptive" not in result
    assert load_spec(out).muxes["duo"].adaptive == "off"

    # a list without the mux's own policy: replaced untried, and said so
    source = tmp_path / "other" / "delta.mux"
    source.parent.mkdir()
    source.write_text(_delta_mux("[off, exact]"))
    out = source.with_name("tuned.mux")
    saved = source.with_name("result.json")
    code, stdout, err = _run(capsys, "tune", str(source), "--store", url, "--dataset", "mixed",
                             "--out", str(out), "--result", str(saved), "--no-progress")
    assert code == 0, err
    result = json.loads(saved.read_text())
    written = result["best"]["adaptive"]
    assert result["untried_adaptive"] == "delta(0.3)" and result["policies"] == []
    assert load_spec(out).muxes["duo"].adaptive == written
    assert written in ("off", "exact")
    assert (f"the mux's own adaptive = delta(0.3) was not tried (the tune block's adaptive "
            f"list leaves it out): the tuned mux says adaptive = {written}") in stdout
    assert "adaptive = delta(0.3), which tune search's adaptive list (off, exact)" in err
    assert any("never measured" in w for w in result["warnings"])
    assert (f"# adaptive:    {written} replaces the mux's own delta(0.3), which the tune "
            "block's adaptive list left out (never measured)") in out.read_text()
