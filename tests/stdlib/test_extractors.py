"""Extractors on real recorded model text (ZeroEval GSM8K / MATH level 5) and hand-written cases."""
from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxlang.errors import MuxError
from muxlang.stdlib import registry
from muxlang.stdlib.extractors import boxed, choice_letter, final_number, json_field, regex
from tests.support.data import data_file


def _load(name: str) -> dict[tuple[str, str], str]:
    path = data_file(name)
    if not path.exists():
        pytest.skip(f"{path} not available")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return {(r["id"], r["model"]): r["text"] for r in map(json.loads, fh)}


@pytest.fixture(scope="module")
def gsm8k() -> dict[tuple[str, str], str]:
    return _load("zeroeval-gsm8k-samples.jsonl.gz")


@pytest.fixture(scope="module")
def math_l5() -> dict[tuple[str, str], str]:
    return _load("zeroeval-math-l5-samples.jsonl.gz")


# --------------------------------------------------------------------------------------------
# Real text: GSM8K

GSM = "gsm8k-main-test-#"


@pytest.mark.parametrize(
    "qid, model, answer, number",
    [
        # plain JSON after a line of prose
        ("0", "Meta-Llama-3-8B-Instruct", "18", "18"),
        # a negative dollar amount with thousands separator
        ("2", "Meta-Llama-3-8B-Instruct", "-$10,000", "-10000"),
        # invalid JSON escapes ("\*") inside the reasoning string
        ("1275", "Mixtral-8x7B-Instruct-v0.1", "15", "15"),
        ("414", "Mixtral-8x7B-Instruct-v0.1", "56", "56"),
        # three JSON blocks, the first two with unquoted arithmetic as the answer: the last wins
        ("646", "Yi-1.5-9B-Chat", "79", "79"),
        # a ``` json fence after long prose
        ("1147", "Yi-1.5-9B-Chat", "9", "9"),
        ("598", "Phi-3.5-mini-instruct", "69", "69"),
        # the opening quote of "answer" was lost: '**answer": "42"'
        ("367", "gemma-2-2b-it", "42", "42"),
    ],
)
def test_json_field_real_gsm8k(gsm8k, qid, model, answer, number):
    text = gsm8k[(GSM + qid, model)]
    assert json_field()(text) == answer
    assert json_field(then="final_number")(text) == number
    assert final_number()(text) == number


def test_truncated_real_output_has_no_json_answer(gsm8k):
    # gemma-2-2b looped until the token limit: no JSON object, no answer field
    text = gsm8k[(GSM + "855", "gemma-2-2b-it")]
    assert json_field()(text) is None
    assert final_number()(text) == "21.25"  # the last number it wrote


def test_json_field_reads_most_real_gsm8k_outputs(gsm8k):
    ex = json_field(then="final_number")
    read = sum(ex(t) is not None for t in gsm8k.values())
    assert read / len(gsm8k) > 0.99


# --------------------------------------------------------------------------------------------
# Real text: MATH level 5 (LaTeX inside JSON strings, often not valid JSON)


@pytest.mark.parametrize(
    "qid, model, answer",
    [
        # "\gcd" etc. in the reasoning: invalid JSON escapes
        ("471", "Phi-3-mini-4k-instruct", "1"),
        # single-backslash LaTeX in the answer: "\sqrt" is invalid JSON, "\frac" would be a form feed
        ("18", "Meta-Llama-3-8B-Instruct", r"3\sqrt{5} + \sqrt{15} + 5"),
        ("308", "Phi-3-mini-4k-instruct", r"-\frac{1}{2}"),
        # properly escaped ("\\frac") and over-escaped ("\\\\frac") LaTeX
        ("30", "Meta-Llama-3-8B-Instruct", r"-\frac{1}{6}"),
        ("417", "Phi-3.5-mini-instruct", r"\frac{17}{4}"),
        # "\(" ... "\)" inline maths in the reasoning
        ("352", "Qwen2.5-72B-Instruct", "0"),
        # the same JSON object repeated three times
        ("391", "Qwen2.5-3B-Instruct", "8"),
        # the reasoning string never closes, then the model echoes the prompt template
        # ('"answer": "___"') and its example ('`"answer": "42"`'): neither is the answer
        ("120", "Phi-3-mini-4k-instruct", r"\sqrt[4]{188}"),
        ("134", "Phi-3-mini-4k-instruct", r"11 + 7\sqrt{3}"),
        ("8", "Phi-3.5-mini-instruct", "9"),
    ],
)
def test_json_field_real_math(math_l5, qid, model, answer):
    assert json_field()(math_l5[(qid, model)]) == answer


def test_json_field_then_boxed_falls_back_to_field(math_l5):
    text = math_l5[("18", "Meta-Llama-3-8B-Instruct")]
    # no \boxed{} in the field: the field itself
    assert json_field(then="boxed")(text) == r"3\sqrt{5} + \sqrt{15} + 5"
    text = math_l5[("2", "Meta-Llama-3-8B-Instruct")]
    assert boxed()(text) == "2"  # \boxed{2} at the end of the reasoning
    assert json_field(then="final_number")(text) == "2"


def test_json_field_latex_never_decodes_to_control_characters(math_l5):
    ex = json_field()
    for text in list(math_l5.values())[:3000]:
        out = ex(text)
        if out is not None:
            assert not any(ord(c) < 32 and c not in "\n\t" for c in out), out


# --------------------------------------------------------------------------------------------
# final_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("#### $1,234.00", "1234.00"),
        ("#### -$10,000", "-10000"),
        ("first 5 then\n#### 7\nwait, no\n#### 8", "8"),
        ("So the total is 40. The answer is 42.", "42"),
        ("The final answer is 18.00.", "18.00"),
        ("The answer is $1,234.", "1234"),
        ("total \\$18 so the answer is \\$18.", "18"),
        ("The answer is: **$18**", "18"),
        ("The answer is 50%.", "50"),
        ("The answer is 18 dollars per day", "18"),
        ("Answer: -5", "-5"),
        ("The answer is 3/4", "3/4"),
        ("The final answer is \\boxed{18}.", "18"),
        ("It is 7 and 8, so \\boxed{42} is it", "42"),
        ("It gives \\boxed{\\frac{3}{4}}", "3/4"),
        ("It gives \\boxed{5 \\text{ cm}}", "5"),
        ("It gives \\boxed{x+1} after 3 steps", "3"),  # non-numeric box: the last number
        ("He has 5 cm left", "5"),
        ("The temperature fell to -3.", "-3"),
        ("x = 10-5 = 5", "5"),
        ("10-5", "5"),  # a binary minus, not a sign
        ("so we get 12 - 4", "4"),
        ("It costs $0.50", "0.50"),
        ("populations 2,3,4 and 1,000,000", "1000000"),
        ("18.", "18"),
        ("$18", "18"),
        ("2/3", "2/3"),
        ("no numbers here", None),
        ("", None),
        ("   ", None),
    ],
)
def test_final_number(text, expected):
    assert final_number()(text) == expected


def test_final_number_prefers_hashes_over_answer_is_over_boxed():
    text = "\\boxed{1}. The answer is 2.\n#### 3\nThen 4 more."
    assert final_number()(text) == "3"
    assert final_number()("\\boxed{1}. The answer is 2. Then 4 more.") == "2"
    assert final_number()("\\boxed{1}. Then 4 more.") == "1"


# --------------------------------------------------------------------------------------------
# boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{1} first, then finally \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last, not first
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}"),
        ("\\fbox{x^{2}}", "x^{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{(0,9) \\cup (9,36)}", "(0,9) \\cup (9,36)"),
        ("so \\boxed 5$.", "5"),
        ("\\boxed{2} and a broken \\boxed{3", "2"),
        ("no box", None),
        ("\\boxed{}", None),
    ],
)
def test_boxed(text, expected):
    assert boxed()(text) == expected


# --------------------------------------------------------------------------------------------
# choice_letter


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Reasoning...\n##Answer: C##", "C"),
        ("Answer: (C)", "C"),
        ("The answer is C", "C"),
        ("**Answer:** C", "C"),
        ("The correct answer is (B).", "B"),
        ("Final answer: D", "D"),
        ("so the answer is $\\boxed{B}$", "B"),
        ("I compared the options.\n(C)", "C"),
        ("Hmm, that leaves **B**", None),  # not alone on the line, no marker
        ("**B**", "B"),
        ("Option D", "D"),
        ("Answer: D) 42", "D"),
        ("Answer: A is correct because it is larger.", "A"),
        # traps
        ("Let's look at each answer choice. A train leaves at 5.", None),
        ("A train leaves the station at 3 pm.", None),
        ("Answer: A train leaves at 5, so nothing can be said.", None),
        ("I think it's B because of the sign", None),
        ("The correct answer is (B). Let me check answer choice A, it is wrong.", "B"),
        ("The answer is B. Wait, re-checking: the answer is D.", "D"),  # last marker wins
        ("(A) 1 (B) 2 (C) 3 (D) 4\nlet me think", None),  # a listing, no answer
        ("", None),
    ],
)
def test_choice_letter(text, expected):
    assert choice_letter()(text) == expected


def test_choice_letter_custom_letters():
    ex = choice_letter(letters="ABCDE")
    assert ex("##Answer: E##") == "E"
    assert choice_letter()("##Answer: E##") is None  # E is not an option of ABCD
    ten = choice_letter(letters="ABCDEFGHIJ")
    assert ten("Answer: I think it is J") is None  # "I" the pronoun is not option I
    assert ten("The answer is I.") == "I"


def test_choice_letter_bad_letters():
    with pytest.raises(MuxError):
        choice_letter(letters="")
    with pytest.raises(MuxError):
        choice_letter(letters="AB1")


# --------------------------------------------------------------------------------------------
# json_field (hand-written)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"reasoning": "r", "answer": "18"}', "18"),
        ('Sure!\n```json\n{"reasoning": "r", "answer": 42}\n```\nDone.', "42"),
        ('{"answer": 18.5}', "18.5"),
        ('{"answer": -3}', "-3"),
        ('{"answer": null}', None),
        ('{"answer": ""}', None),
        ('{"answer": [1, 2]}', "[1, 2]"),
        ('{"answer": true}', "true"),
        ('{"reasoning": "a\nraw newline", "answer": "7"}', "7"),
        ('{"reasoning": "$\\frac{1}{2}$ and \\sqrt{2}", "answer": "\\frac{1}{2}"}', "\\frac{1}{2}"),
        ('{"reasoning": "x", "answer": "\\\\frac{3}{4}"}', "\\frac{3}{4}"),
        ('{"reasoning": "x", "answer": "\\times 2 \\theta \\beta \\neq \\rho"}',
         "\\times 2 \\theta \\beta \\neq \\rho"),
        ('{"reasoning": "says "hi" badly", "answer": "5"}', "5"),  # unescaped quotes: regex
        ('{"reasoning": "unterminated, "answer": "6"', "6"),
        ('{"answer": 72 + 25}', "72 + 25"),  # not JSON: the regex reads the raw value
        ('{"a": 1} then {"answer": "1"} then {"answer": "2"}', "2"),
        ('{"outer": {"answer": "inner"}}', "inner"),  # lenient: found by the fallback
        ('{"reasoning": "r", "answer": "___"}', None),  # a template blank is no answer
        ("no json here", None),
        ("{ not json", None),
    ],
)
def test_json_field(text, expected):
    assert json_field()(text) == expected


def test_json_field_other_field_and_then():
    text = '{"reasoning": "so 18", "final": "$1,234.00", "answer": "x"}'
    assert json_field(field="final")(text) == "$1,234.00"
    assert json_field(field="final", then="final_number")(text) == "1234.00"
    assert json_field(then="boxed")('{"answer": "so \\\\boxed{\\\\frac12}"}') == "\\frac12"
    assert json_field(then="choice_letter")('{"answer": "(C)"}') == "C"
    # then reads nothing: the field itself
    assert json_field(then="final_number")('{"answer": "cannot be determined"}') == (
        "cannot be determined")


def test_json_field_bad_then():
    with pytest.raises(MuxError, match="unknown extractor"):
        json_field(then="final_numbr")
    with pytest.raises(MuxError):
        json_field(then="regex")  # needs a pattern
    with pytest.raises(MuxError):
        json_field(field="")


# --------------------------------------------------------------------------------------------
# regex


def test_regex_last_match_and_group():
    ex = regex(r"ANSWER: (\w+)")
    assert ex("ANSWER: foo ... ANSWER: bar") == "bar"
    assert ex("nothing") is None
    assert regex(r"(\d+)-(\d+)", group=2)("1-2 and 3-4") == "4"
    assert regex(r"\d+", group=0)("a 12 b 34") == "34"
    assert regex(r"(x)|(y)", group=1)("x then y") is None  # group 1 did not take part


def test_regex_bad_pattern_and_group():
    with pytest.raises(MuxError, match="bad pattern"):
        regex("(unclosed")
    with pytest.raises(MuxError, match="group"):
        regex(r"\d+")  # default group 1, but no group in the pattern
    with pytest.raises(MuxError):
        regex(r"(\d)", group=-1)


def test_regex_compiles_once(monkeypatch):
    import re as re_module

    ex = regex(r"(\d+)")
    calls = []
    real = re_module.compile
    monkeypatch.setattr(re_module, "compile", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(5):
        assert ex("x 7") == "7"
    assert calls == []


# --------------------------------------------------------------------------------------------
# Robustness: never raise, whatever the input

ALL = [
    final_number(),
    boxed(),
    choice_letter(),
    choice_letter(letters="ABCDEFGHIJ"),
    json_field(),
    json_field(then="final_number"),
    json_field(then="boxed"),
    regex(r"ANSWER: (\w+)"),
]

NASTY = [
    "",
    "\x00\x01\x02",
    "{" * 5000,
    "}" * 5000,
    '{"answer": ' * 3000,
    "\\boxed{" * 3000,
    "\\" * 10001,
    "####" * 1000,
    "answer is " * 5000,
    "1," * 20000,
    '{"answer": "' + "\\" * 999 + '"}',
    "\ud800 lone surrogate",
    "9" * 100_000,
    "x" * 1_000_000 + " The answer is 5",
    "Answer: " + "** " * 20000,
    "The answer is " + "\\boxed{ " * 5000,
    '"answer": "' * 20000,
    "##Answer: " * 20000,
    "-" * 100_000 + "5",
]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_never_raises_on_nasty_input(text):
    for ex in ALL:
        out = ex(text)
        assert out is None or isinstance(out, str)


def test_non_string_input_is_none():
    for ex in ALL:
        assert ex(None) is None  # type: ignore[arg-type]
        assert ex(42) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}"\\:,#$. 0123456789abcABCD()[]\n*-/%')) | st.characters(),
               max_size=300))
def test_never_raises_on_random_text(text):
    for ex in ALL:
        out = ex(text)
        assert out is None or (isinstance(out, str) and out == out.strip() and out)


def test_registry_builds_every_extractor():
    from muxlang.ir import Call

    for name, entry in registry.EXTRACTORS.items():
        args = ((("pattern", r"(\d+)"),) if name == "regex"
                else (("first", "final_number"),) if name == "first_of" else ())
        call = Call(name=name, args=args)
        ex = registry.make_extractor(call)
        assert callable(ex)
        ex("The answer is 5")


def test_std_module_tasks_build_and_read(tmp_path):
    """The ready tasks of std.gsm8k / std.math / std.mcq build their extractor and equivalence."""
    from muxlang.lang import load_spec

    spec_file = tmp_path / "t.mux"
    spec_file.write_text("import std.gsm8k\nimport std.math\nimport std.mcq\n")
    spec = load_spec(spec_file)
    assert spec.tasks
    text = '{"reasoning": "so", "answer": "\\\\boxed{18}"}\n#### 18\n##Answer: C##'
    for name, task in spec.tasks.items():
        extract = registry.make_extractor(task.extract)
        key = registry.make_equivalence(task.equivalence).key
        answer = extract(text)
        assert answer is not None, name
        assert key(answer) in ("18", "C"), (name, answer, key(answer))


def test_gold_rationales_and_solutions_read_back_to_their_answers():
    """final_number on every GSM8K rationale and boxed on every MATH-500 solution give the gold."""
    from muxlang.stdlib.equivalence import math, numeric

    gsm, mth = data_file("slm-mux-gsm8k-500.json"), data_file("slm-mux-math-500.json")
    if not gsm.exists() or not mth.exists():
        pytest.skip("SLM-MUX data not available")
    num, ex = numeric().key, final_number()
    for rec in json.loads(gsm.read_text()):
        assert num(ex(rec["answer"])) == num(rec["answer"].split("####")[-1]), rec["answer"][-80:]
    key, box = math().key, boxed()
    for rec in json.loads(mth.read_text()):
        assert key(box(rec["solution"])) == key(rec["answer"]), rec["answer"]


@pytest.mark.parametrize("text, expected", [
    ("1e-05", "1e-05"), ("2.14e+30", "2.14e+30"), ("The answer is 1e-05.", "1e-05"),
    ("#### 3.5E6", "3.5E6"), ("\\boxed{2.5e3}", "2.5e3"), ("x = 6e2 meters, so 600", "600"),
    ("version 2 e5", "2"), ("answer: 3e", "3"),
])
def test_final_number_reads_exponent_notation(text, expected):
    from muxlang.stdlib.extractors import final_number

    assert final_number()(text) == expected


def test_exponent_answers_compare_equal_to_their_value():
    from muxlang.stdlib.equivalence import numeric
    from muxlang.stdlib.extractors import final_number

    key = numeric()
    key = key.key if hasattr(key, "key") else key
    assert key(final_number()("so the answer is 1e-05")) == key("0.00001")
