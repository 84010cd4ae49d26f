"""Specs are code (issue 10, item 13): imports load only .mux files, never reading (or echoing)
anything else; an api_key may only name a variable that says it holds a key."""
from __future__ import annotations

import pytest

from muxlang.cli import main
from muxlang.errors import SpecError
from muxlang.lang import check_text, load_spec

SECRET_LINE = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI-do-not-show"

REST = '''
backend b { kind = replay }
model m { backend = b }
task t { user = "{q}" }
mux x { task = t  pool = [m * 1] }
'''


@pytest.mark.parametrize("target", ["../x.env", "secrets.txt", "/etc/passwd", "model.MUX",
                                    "dir.mux/../x.env"])
def test_an_import_of_anything_but_a_mux_file_is_refused_unread(tmp_path, capsys, target):
    (tmp_path / "x.env").write_text(SECRET_LINE + "\n")
    (tmp_path / "spec" / "dir.mux").mkdir(parents=True)
    (tmp_path / "spec" / "secrets.txt").write_text(SECRET_LINE + "\n")
    (tmp_path / "spec" / "model.MUX").write_text(SECRET_LINE + "\n")
    spec = tmp_path / "spec" / "main.mux"
    spec.write_text(f'import "{target}"\n' + REST)
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == f"cannot import '{target}': only .mux spec files can be imported"
    assert (diagnostic.line, diagnostic.column) == (1, 1)
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "wJalrX" not in err and "root:" not in err and "internal error" not in err


def test_a_mux_file_anywhere_may_be_imported(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "models.mux").write_text('backend b { kind = replay }\n')
    (tmp_path / "spec").mkdir()
    spec = tmp_path / "spec" / "main.mux"
    spec.write_text('import "../shared/models.mux"\n' + REST.replace(
        "backend b { kind = replay }", ""))
    assert load_spec(spec).backends["b"].kind == "replay"


def backend_key(name: str) -> str:
    return f'backend k {{ kind = openai  url = "http://127.0.0.1:9/v1"  api_key = env("{name}") }}'


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "my_secret", "DB_PASSWORD",
                                  "KEY", "AUTH_BEARER", "GOOGLE_CREDENTIALS", "apikey"])
def test_an_api_key_comes_from_a_variable_named_for_a_key(name):
    assert check_text(backend_key(name) + REST, "s.mux").backends["k"].api_key_env == name


@pytest.mark.parametrize("name", ["HOME", "AWS_REGION", "PATH", "USER", "DATABASE_URL"])
def test_an_api_key_may_not_send_any_other_variable(name):
    with pytest.raises(SpecError) as caught:
        check_text(backend_key(name) + REST, "s.mux")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == (f"api_key may not read '{name}': its name does not say it "
                                  "holds a key, and the key is sent to the backend's URL")
    assert "OPENAI_API_KEY" in diagnostic.hint


@pytest.mark.parametrize("name", ["", "A B", "1KEY", "KEY=x"])
def test_an_api_key_names_a_variable(name):
    with pytest.raises(SpecError) as caught:
        check_text(backend_key(name) + REST, "s.mux")
    assert caught.value.diagnostics[0].message.endswith("is not an environment variable name")
