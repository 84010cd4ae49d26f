"""Scoring a run's answers against the gold answers its records hold.

A record that holds the task's ``gold`` field (``answer`` when the task names none) is scored:
its gold text is read as ``eval`` reads a dataset's gold (the equivalence key of the text, else of
what the task's extractor reads from it, so a GSM8K rationale ending in ``#### 18`` is 18), and the
record's answer is correct when its equivalence key equals the gold key. A record without the
field, or whose gold cannot be read, is not scored (``correct`` is None).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

from muxlang import ir


class Scorer:
    """A task's extractor and equivalence, built on first use, applied to gold and answers."""

    def __init__(self, task: ir.Task):
        self.task = task
        self.field = task.gold or "answer"
        self._extract: Optional[Callable[[str], Optional[str]]] = None
        self._key: Optional[Callable[[str], Optional[str]]] = None
        self._equivalence: Any = None

    def _build(self) -> None:
        from muxlang.stdlib.registry import make_equivalence, make_extractor

        equivalence = make_equivalence(self.task.equivalence)
        self._equivalence = equivalence
        self._key = equivalence.key if hasattr(equivalence, "key") else equivalence
        self._extract = make_extractor(self.task.extract)

    def key(self, answer: Optional[str]) -> Optional[str]:
        """The equivalence key of an extracted answer (None when it cannot be read)."""
        if answer is None:
            return None
        if self._key is None:
            self._build()
        try:
            return self._key(answer)  # type: ignore[misc]
        except Exception:  # a stdlib failure on odd text is an unreadable answer
            return None

    def extract(self, text: Optional[str]) -> Optional[str]:
        if text is None:
            return None
        if self._extract is None:
            self._build()
        try:
            return self._extract(text)  # type: ignore[misc]
        except Exception:
            return None

    def gold_key(self, gold: Any) -> Optional[str]:
        """Gold value → key; a rationale ("... #### 18") is read with the extractor as a fallback."""
        if gold is None:
            return None
        text = gold if isinstance(gold, str) else json.dumps(gold, sort_keys=True)
        key = self.key(text)
        if key is None:
            key = self.key(self.extract(text))
        return key

    def has_gold(self, record: Any) -> bool:
        return isinstance(record, Mapping) and self.field in record

    def score(self, record: Any, answer: Optional[str]) -> tuple[Any, Optional[bool]]:
        """(the record's gold value, whether ``answer`` is right); (None, None) without gold."""
        if not self.has_gold(record):
            return None, None
        gold = record[self.field]
        if self._key is None:
            self._build()
        if hasattr(self._equivalence, "for_record"):  # keyed by the record (code by execution)
            try:
                key = self._equivalence.for_record(record)
                text = gold if isinstance(gold, str) else json.dumps(gold, sort_keys=True)
                gold_key = key(text)
                return gold, (None if gold_key is None else
                              answer is not None and key(answer) == gold_key)
            except Exception:
                return gold, None
        gold_key = self.gold_key(gold)
        if gold_key is None:
            return gold, None
        return gold, self.key(answer) == gold_key
