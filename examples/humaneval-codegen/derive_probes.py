"""Derive HumanEval probe inputs: the arguments of every ``candidate(...)`` call in a problem's
``check(candidate)``, without their expected outputs.

    python examples/humaneval-codegen/derive_probes.py ../shared/data/humaneval-problems.jsonl \
        > examples/humaneval-codegen/humaneval-questions.jsonl

How: the test is parsed with ``ast``; each call ``candidate(a, b, ...)`` (positional arguments
only) gives the probe ``"(a, b,)"``, its source text. A probe is kept when it is a literal
(``ast.literal_eval`` reads it) or an expression whose only names are the builtins ``range``,
``list``, ``tuple``, ``str``, ``int``, ``float``, ``abs``, ``len``, ``sorted`` (e.g.
``list(range(10))``); calls inside loops whose arguments name loop variables or random values
are dropped (three problems whose tests draw random inputs get hand-written probes: ``MANUAL``).
Duplicates are dropped; order kept. The expected values (the right side of the
assertion) are never read: selection must not see the answers.

Each output line: ``{id, question, answer, prompt, entry_point, probes, test}`` where
``question`` = the prompt (what the model completes), ``answer`` = the canonical solution's body
(the gold program is ``prompt + answer``), ``probes`` = the list above.
"""
from __future__ import annotations

import ast
import json
import sys

# Three tests draw random inputs (find_zero, decode_cyclic, decode_shift): nothing to derive, so
# these probes are written by hand (inputs only, like the rest).
MANUAL = {
    "HumanEval/32": ["([1, 2], )", "([-6, 11, -6, 1], )", "([3, -4], )", "([-10, -2, 4, 1], )"],
    "HumanEval/38": ["('bcaefd', )", "('hello world', )", "('abcdefghij', )", "('xy', )"],
    "HumanEval/50": ["('fghij', )", "('abcxyz', )", "('hello', )", "('zzzz', )"],
}
SAFE = {"range", "list", "tuple", "str", "int", "float", "abs", "len", "sorted", "True", "False",
        "None"}


def probes(test: str) -> list[str]:
    tree = ast.parse(test)
    out: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "candidate") or node.keywords:
            continue
        if any(isinstance(a, ast.Starred) for a in node.args):
            continue
        text = "(" + "".join(ast.get_source_segment(test, a) + ", " for a in node.args) + ")"
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError):
            names = {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}
            if not names <= SAFE:
                continue
        if text not in out:
            out.append(text)
    # ast.walk is breadth-first: sort by position in the test for a stable, readable order
    return sorted(out, key=test.find)


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            p = json.loads(line)
            record = {"id": p["id"], "question": p["prompt"], "answer": p["canonical_solution"],
                      "prompt": p["prompt"], "entry_point": p["entry_point"],
                      "probes": MANUAL.get(p["id"]) or probes(p["test"]), "test": p["test"]}
            print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
