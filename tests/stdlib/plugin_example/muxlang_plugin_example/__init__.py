"""A muxlang plugin, as a user would write one: an extractor registered by entry point.

Its distribution metadata (``muxlang_plugin_example-0.1.dist-info``, what ``pip install`` of a
package with this in its pyproject.toml would write) declares:

    [project.entry-points."muxlang.plugins"]
    "extractor.last_word" = "muxlang_plugin_example:last_word"

Putting this folder on ``sys.path`` (PYTHONPATH) is all it takes to install it for the tests.
"""
from __future__ import annotations

import re


def last_word(upper: bool = False, min_length: int = 1):
    """The last word of the text (letters only), upper-cased when asked."""
    if min_length < 1:
        raise ValueError("last_word: 'min_length' must be at least 1")

    def extract(text: str) -> str | None:
        words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= min_length]
        if not words:
            return None
        return words[-1].upper() if upper else words[-1]

    return extract
