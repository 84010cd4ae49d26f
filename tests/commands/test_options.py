"""Option values shared by run, collect, eval and graph."""
from __future__ import annotations

import argparse

import pytest

from muxlang.commands.options import (backend_urls, non_negative_int, positive_int, request_rate,
                                      select_runnable)
from muxlang.errors import MuxError
from muxlang.lang import check_text

SPEC = """
backend local { kind = openai  url = "http://127.0.0.1:9/v1" }
model m { backend = local }
task t { user = "{question}" }
mux first { task = t  pool = [m * 1] }
mux second { task = t  pool = [m * 2] }
"""


@pytest.mark.parametrize("text,message", [("-3", "must be >= 1"), ("0", "must be >= 1"),
                                          ("x", "'x' is not a whole number")])
def test_positive_int_names_its_own_bound(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)
    assert positive_int("4") == 4


def test_non_negative_int():
    assert non_negative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0"):
        non_negative_int("-1")


@pytest.mark.parametrize("text,per_second", [("20", 20.0), ("20/s", 20.0), ("600/m", 10.0),
                                             ("3600/h", 1.0), (" 1.5e1 / s ", 15.0)])
def test_request_rate(text, per_second):
    assert request_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["0", "-1/s", "fast", "20/d"])
def test_bad_request_rates(text):
    with pytest.raises(argparse.ArgumentTypeError):
        request_rate(text)


def test_backend_urls_are_checked_against_the_spec():
    spec = check_text(SPEC, "x.mux")
    assert backend_urls(["local=http://h:1/v1"], spec) == {"local": "http://h:1/v1"}
    with pytest.raises(MuxError, match="did you mean 'local'"):
        backend_urls(["lokal=http://h:1/v1"], spec)
    with pytest.raises(MuxError, match="expects NAME=URL"):
        backend_urls(["local"], spec)


def test_select_runnable_defaults_to_the_last_and_suggests_names():
    spec = check_text(SPEC, "x.mux")
    assert select_runnable(spec, "x.mux", None).name == "second"
    assert select_runnable(spec, "x.mux", "first").name == "first"
    with pytest.raises(MuxError, match="did you mean 'first'"):
        select_runnable(spec, "x.mux", "frist")


def test_an_error_raised_while_handling_ctrl_c_is_the_interruption():
    from muxlang.errors import caused_by_interrupt

    def library_cleanup_that_breaks():
        try:
            raise KeyboardInterrupt
        finally:
            raise UnboundLocalError("cannot access local variable 'updated_state'")

    with pytest.raises(UnboundLocalError) as caught:
        library_cleanup_that_breaks()
    assert caused_by_interrupt(caught.value)
    assert not caused_by_interrupt(ValueError("a bug"))
