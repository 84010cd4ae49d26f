from muxlang.lang import ast
from muxlang.lang.parser import _lark, parse

SOURCE = '''# a comment
import std.gsm8k
import "shared.mux"

backend local {
  kind    = openai   # trailing comment
  rate    = 20/s
  timeout = 1.5m
  n       = auto
}
task t {
  user = """
    Line one {question}
      indented
  """
  equivalence = numeric(tolerance = 1e-6)
  extract = regex("#### (\\\\d+)", 1)
  fields = ["question", "answer",]
}
mux x { task = t pool = [a * 3, inner] }
tune s { mux = x samples = 0..9 trials = 10 }
'''


def test_parser_is_built_once():
    assert _lark() is _lark()


def test_parses_every_value_kind_with_positions():
    module = parse(SOURCE, "s.mux")
    assert [(i.target, i.is_file) for i in module.imports] == [
        ("std.gsm8k", False), ("shared.mux", True)]
    backend, task, mux, tune = module.decls
    assert (backend.kind, backend.name, str(backend.name_pos)) == ("backend", "local", "s.mux:5:9")
    rate = backend.get("rate").value
    assert isinstance(rate, ast.Rate) and rate.per_second == 20.0
    assert backend.get("timeout").value.seconds == 90.0
    assert backend.get("n").value.name == "auto"
    user = task.get("user").value
    assert user.value == "Line one {question}\n  indented"
    call = task.get("equivalence").value
    assert call.name == "numeric" and call.args[0].name == "tolerance"
    assert call.args[0].value.value == 1e-6
    regex = task.get("extract").value
    assert regex.args[0].value.value == "#### (\\d+)" and regex.args[1].value.value == 1
    assert [s.value for s in task.get("fields").value.items] == ["question", "answer"]
    pool = mux.get("pool").value
    member, inner = pool.items
    assert (member.ref.name, member.count.value, inner.name) == ("a", 3, "inner")
    span = SOURCE[pool.start:pool.end]
    assert span == "[a * 3, inner]"
    samples = tune.get("samples").value
    assert (samples.low.value, samples.high.value) == (0, 9)


def test_keywords_do_not_swallow_longer_names():
    module = parse("model important { truely = 1 }", "k.mux")
    assert module.decls[0].name == "important"
    assert module.decls[0].attrs[0].key == "truely"


def test_crlf_files_give_the_same_long_strings_as_lf():
    lf = 'task t {\n  user = """\n    Q: {question}\n    A:\n  """\n}\n'
    crlf = lf.replace("\n", "\r\n")
    values = [parse(text, "t.mux").decls[0].get("user").value.value for text in (lf, crlf)]
    assert values == ["Q: {question}\nA:"] * 2


def test_unknown_escapes_do_not_depend_on_warning_filters():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as python -W error, or the SyntaxWarning of 3.12+
        module = parse('task t { extract = regex("a\\tb(\\d+)") }', "w.mux")
    assert module.decls[0].get("extract").value.args[0].value.value == "a\tb(\\d+)"
