"""Backend URLs a request could not use (issue 10, item 12): clear errors before anything is
sent, never an internal error, never the URL's password."""
from __future__ import annotations

import json

import pytest

from muxlang.cli import main
from tests.support.helpers import KEY, spec_text

PASSWORD = "s3cret-Passw0rd"


def run(spec, records, *extra) -> int:
    return main(["run", str(spec), "--input", str(records), "--output", "-", "--no-progress",
                 *map(str, extra)])


def test_credentials_in_the_url_and_an_api_key_are_a_clear_error(
        server, api_key, write_spec, write_records, capsys):
    url = server.openai_url.replace("http://", f"http://user:{PASSWORD}@")
    spec = write_spec(spec_text(url, samples=1))
    records = write_records([{"id": 1, "question": "q"}])
    assert run(spec, records) == 1
    captured = capsys.readouterr()
    assert "backend 'local': its url carries credentials (http://***@127.0.0.1:" in captured.err
    assert "drop the user:password@ part of the url, or the backend's api_key" in captured.err
    assert "internal error" not in captured.err and captured.out == ""
    assert PASSWORD not in captured.err + captured.out and "user:s3" not in captured.err
    assert server.requests == []  # said before anything is sent
    # the same URL given on the command line
    spec = write_spec(spec_text(server.openai_url, samples=1))
    assert run(spec, records, "--backend", f"local={url}") == 1
    assert "carries credentials" in capsys.readouterr().err


def test_credentials_in_the_url_without_a_key_are_sent_and_never_shown(
        server, write_spec, write_records, capsys):
    url = server.openai_url.replace("http://", f"http://user:{PASSWORD}@")
    spec = write_spec(spec_text(url, samples=1, key=False))
    records = write_records([{"id": 1, "question": "q"}])
    assert run(spec, records) == 0
    assert server.requests and all(r["authorization"].startswith("Basic ")
                                   for r in server.requests)
    assert PASSWORD not in capsys.readouterr().out


@pytest.mark.parametrize("url,reason", [
    ("http://127.0.0.1:99999/v1", "Port out of range"),
    (f"http://user:{PASSWORD}@127.0.0.1:notaport/v1", "Port could not be cast"),
    ("http://[::1/v1", "Invalid IPv6 URL"),
    ("http://exa mple.com/v1", "no host, or a host with spaces"),
])
def test_a_url_no_request_could_use_is_a_clear_error(url, reason, write_spec, write_records,
                                                     capsys):
    spec = write_spec(spec_text("http://127.0.0.1:1/v1", samples=1, key=False))
    records = write_records([{"id": 1, "question": "q"}])
    assert run(spec, records, "--backend", f"local={url}") == 1
    err = capsys.readouterr().err
    assert "is not a valid URL" in err and reason in err
    assert "internal error" not in err and PASSWORD not in err
