"""``muxlang eval --html FILE``: one self-contained HTML report, opened in a real headless
Chromium (Debian's package; .ci/run installs it): the page loads without console errors, the
record table has one row per evaluated record, and a screenshot is not blank."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import muxlang
from muxlang.cli import main

ROOT = Path(__file__).resolve().parents[2]
GSM = ROOT / "examples" / "zeroeval-gsm8k"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def gsm8k_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("report") / "g.sqlite"
    muxlang.Session(store=str(store)).import_samples(
        GSM / "zeroeval-gsm8k-samples.jsonl.gz", GSM / "zeroeval-gsm8k-questions.jsonl")
    return store


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120)


def test_the_page_is_self_contained_with_one_row_per_record(gsm8k_store, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["eval", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 str(GSM / "gsm8k-test.jsonl"), "--limit", "40", "--html", str(page)]) == 0
    assert "hint: without validation accuracies" in capsys.readouterr().out
    text = page.read_text()
    assert len(re.findall(r'<tr class="record ', text)) == 40
    # nothing from elsewhere: no script, stylesheet, image or font by URL
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert "<details><summary>" in text and "SLM-MUX" in text and "Agent Forest" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_report_in_a_headless_browser(gsm8k_store, tmp_path):
    page = tmp_path / "report.html"
    tune = tmp_path / "tune.json"
    tune.write_text('{"best": {"pool": {"gemma2_27b": 1}, "rule": "single", "val_accuracy": 0.9,'
                    ' "cost": 0.001}, "front_accuracy_cost": [{"pool": {"gemma2_27b": 1}, '
                    '"rule": "single", "val_accuracy": 0.9, "cost": 0.001}, {"pool": '
                    '{"gemma2_27b": 1, "gemma2_9b": 1, "mistral_nemo": 1}, "rule": "majority", '
                    '"val_accuracy": 0.93, "cost": 0.003}], "points": [{"accuracy": 0.8, '
                    '"cost": 0.002}]}')
    assert main(["eval", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 str(GSM / "gsm8k-test.jsonl"), "--limit", "25", "--html", str(page),
                 "--tune-result", str(tune)]) == 0
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<tr class="record ', dom.stdout)) == 25
    assert "Tuning: accuracy against cost" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    assert not re.search(r"Uncaught|SyntaxError|Failed to load resource", dom.stderr)

    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1400",
                      "--hide-scrollbars", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05  # not one colour: text, bars and tables were drawn
    # the top-left corner is the page's white, the bars are drawn in their blue somewhere
    blue = ((abs(pixels[..., 0] - 0x4a / 255) < 0.05) & (abs(pixels[..., 2] - 0xd4 / 255) < 0.05))
    assert blue.sum() > 500


def test_samples_command_prints_stored_samples(gsm8k_store, capsys):
    """``muxlang samples``: JSON lines (not a terminal) with the run log's fields; a rich table."""
    assert main(["samples", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 "zeroeval-gsm8k", "--id", "gsm8k-main-test-#4", "--model", "phi35_mini",
                 "--model", "gemma2_2b", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["member"], r["sample"]) for r in rows] == [
        ("gsm8k-main-test-#4", "phi35_mini", 0), ("gsm8k-main-test-#4", "gemma2_2b", 0)]
    assert rows[0]["model"] == "Phi-3.5-mini-instruct" and rows[0]["answer"] == "140"
    assert rows[0]["text"] and rows[0]["prompt"][-1]["role"] == "user"
    assert set(rows[0]) >= {"key", "error", "tokens", "latency"}
    assert main(["samples", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 "zeroeval-gsm8k", "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 * 10  # the pool: ten models, one each
    assert main(["samples", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 "zeroeval-gsm8k", "--model", "phi35"]) == 1
    assert "did you mean 'phi35_mini'" in capsys.readouterr().err

    from muxlang.commands.samples import render
    from muxlang.sample_log import stored

    table = io.StringIO()
    render(stored(muxlang.Session(str(gsm8k_store)), str(GSM / "gsm8k.mux"), "zeroeval-gsm8k",
                  ids=["gsm8k-main-test-#4"], models=["phi35_mini"]), file=table)
    assert "1 stored samples" in table.getvalue() and "phi35_mini" in table.getvalue()


def test_evaluate_limit_and_html_report_from_the_api(gsm8k_store):
    from muxlang.report_html import html_report

    session = muxlang.Session(str(gsm8k_store))
    spec = muxlang.load(GSM / "gsm8k.mux")
    report = session.evaluate(spec, "zeroeval-gsm8k", limit=30)
    assert report.dataset.items == 30 and len(report.records) == 30
    # recordings carry no tokens or prices: costs are unknown (None, shown as —), not $0
    assert all(row.cost_per_sample is None for row in report.models.values())
    assert report.details["slm_mux"].cost_per_question is None
    page = html_report(session, spec, "zeroeval-gsm8k", report=report)
    assert page.count('<tr class="record ') == 30 and page.startswith("<!DOCTYPE html>")
    with pytest.raises(muxlang.MuxError, match="limit must be a whole number"):
        session.evaluate(spec, "zeroeval-gsm8k", limit=0)


def test_report_command_writes_the_page_from_saved_results(gsm8k_store, tmp_path, capsys):
    assert main(["eval", str(GSM / "gsm8k.mux"), "--store", str(gsm8k_store), "--dataset",
                 "zeroeval-gsm8k", "--limit", "12", "--json"]) == 0
    saved = tmp_path / "eval.json"
    saved.write_text(capsys.readouterr().out)
    tune = tmp_path / "tune.json"
    tune.write_text('{"best": {"pool": {"a": 1}, "rule": "single", "val_accuracy": 0.9, '
                    '"cost": 0.001}, "front_accuracy_cost": [{"pool": {"a": 1}, "rule": '
                    '"single", "val_accuracy": 0.9, "cost": 0.001}]}')
    page = tmp_path / "r.html"
    assert main(["report", "--result", str(tune), "--eval", str(saved), "--html", str(page)]) == 0
    text = page.read_text()
    assert text.count('<tr class="record ') == 12 and "Tuning: accuracy against cost" in text
    assert main(["report", "--result", str(tune), "--html", str(page)]) == 1
    assert "--html needs --eval" in capsys.readouterr().err
