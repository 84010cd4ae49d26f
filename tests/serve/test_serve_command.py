"""``muxlang serve`` as a command: a real process stopped by SIGTERM (stops accepting, finishes
what is in flight, bounded by --shutdown-timeout), and its option and start-up errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from muxlang.cli import main
from tests.support.helpers import spec_text

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """``python -m muxlang serve SPEC --port 0 ...`` as a subprocess; ``url`` once listening."""

    def __init__(self, spec: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "muxlang", "serve", str(spec), "--port", "0", *args],
            cwd=str(spec.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.lines: list[str] = []
        self.url = None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[2].rsplit("/v1", 1)[0]
                break
        assert self.url, "".join(self.lines)

    def wait_for_line(self, start: str) -> str:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith(start):
                return line
        raise AssertionError(f"no line starting {start!r}: {''.join(self.lines)}")

    def finish(self) -> tuple[int, str]:
        rest = self.proc.stderr.read()
        code = self.proc.wait(60)
        return code, "".join(self.lines) + rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def post(url: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def refuses(url: str) -> bool:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return False
    except OSError:
        return True


def test_sigterm_stops_accepting_and_finishes_the_request_in_flight(backend, write_spec):
    gate = threading.Event()
    backend.latency = lambda model, prompt, seed: gate.wait(60) and 0.0
    served = Served(write_spec(spec_text(backend.openai_url)))
    try:
        answer: dict = {}
        worker = threading.Thread(target=lambda: answer.setdefault("got", post(
            served.url, {"model": "pool", "messages": [{"role": "user", "content": "1 + 1?"}]})))
        worker.start()
        for _ in range(3000):  # until the backend holds the request
            if backend.requests:
                break
            threading.Event().wait(0.01)
        assert backend.requests
        served.proc.send_signal(signal.SIGTERM)
        served.wait_for_line("SIGTERM: stopping")
        for _ in range(3000):  # the listening socket goes while the request is still held
            if refuses(served.url):
                break
            threading.Event().wait(0.01)
        assert refuses(served.url) and not gate.is_set() and served.proc.poll() is None
        gate.set()
        worker.join(60)
        code, err = served.finish()
    finally:
        gate.set()
        served.kill()
    status, body = answer["got"]
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert code == 0
    assert "stopped: 1 requests answered, 0 with errors" in err


def test_the_shutdown_timeout_bounds_a_request_that_does_not_finish(backend, write_spec):
    gate = threading.Event()
    backend.latency = lambda model, prompt, seed: gate.wait(60) and 0.0
    served = Served(write_spec(spec_text(backend.openai_url)), "--shutdown-timeout", "0.5")
    try:
        answer: dict = {}

        def ask():
            try:
                answer["got"] = post(served.url, {"model": "pool", "messages": [
                    {"role": "user", "content": "1 + 1?"}]})
            except (OSError, urllib.error.URLError) as error:
                answer["error"] = error

        worker = threading.Thread(target=ask)
        worker.start()
        for _ in range(3000):
            if backend.requests:
                break
            threading.Event().wait(0.01)
        served.proc.send_signal(signal.SIGTERM)
        code, err = served.finish()  # returns although the backend still holds the request
        worker.join(60)
    finally:
        gate.set()
        served.kill()
    assert code == 0 and "SIGTERM: stopping" in err
    assert "got" not in answer or answer["got"][0] >= 500


def test_the_api_key_is_required_and_never_printed(backend, write_spec):
    key = "serve-secret-key-0123456789"
    served = Served(write_spec(spec_text(backend.openai_url)), "--api-key-env",
                    "MUXLANG_SERVE_TEST_KEY", env={"MUXLANG_SERVE_TEST_KEY": key})
    try:
        status, body = post(served.url, {"model": "pool", "messages": [
            {"role": "user", "content": "x"}]}, key="wrong")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, body = post(served.url, {"model": "pool", "messages": [
            {"role": "user", "content": "x"}]}, key=key)
        assert status == 200
        served.proc.send_signal(signal.SIGINT)
        code, err = served.finish()
    finally:
        served.kill()
    assert code == 0 and "bearer key required" in err
    assert key not in err + json.dumps(body)


def test_option_and_start_up_errors(backend, write_spec, capsys, monkeypatch):
    path = write_spec(spec_text(backend.openai_url))
    monkeypatch.delenv("MUXLANG_SERVE_NO_KEY", raising=False)
    assert main(["serve", str(path), "--api-key-env", "MUXLANG_SERVE_NO_KEY"]) == 1
    assert "--api-key-env MUXLANG_SERVE_NO_KEY: the variable is not set" in \
        capsys.readouterr().err
    assert main(["serve", str(path), "--mux", "pol"]) == 1
    assert "did you mean 'pool'" in capsys.readouterr().err
    assert main(["serve", str(path), "--backend", "remote=http://127.0.0.1:1/v1"]) == 1
    assert "no backend 'remote'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(path), "--port", "70000"])
    assert exit_.value.code == 2 and "from 0 to 65535" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(path), "--shutdown-timeout", "0"])
    assert "seconds > 0" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(path), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    no_url = write_spec(spec_text(backend.openai_url).replace(
        f'url = "{backend.openai_url}"', ""), "no-url.mux")
    assert main(["serve", str(no_url)]) == 2  # the spec's own errors, as `check` gives them
    assert "no-url.mux:2:9: error: backend 'local' needs 'url'" in capsys.readouterr().err
