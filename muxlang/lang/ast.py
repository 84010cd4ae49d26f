"""The syntax tree of a ``.mux`` file: what the user wrote, where.

Every node keeps its position (for messages) and its character span in the source (so a tool can
rewrite one value — the optimizer swaps a mux's pool — and leave comments and layout alone).
Meaning (which keys exist, what a name refers to) is the checker's business, not the tree's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from muxlang.errors import Pos


@dataclass
class Node:
    pos: Pos
    start: int  # character offset of the first character in the source text
    end: int  # character offset one past the last character


@dataclass
class Str(Node):
    value: str


@dataclass
class Num(Node):
    value: float | int
    text: str

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


@dataclass
class Bool(Node):
    value: bool


@dataclass
class Duration(Node):
    seconds: float
    text: str


@dataclass
class Rate(Node):
    per_second: float
    text: str


@dataclass
class Size(Node):
    """A number of bytes: ``8MB`` (10^6), ``512KiB`` (2^10), ``100B``."""

    bytes: int
    text: str


@dataclass
class Range(Node):
    low: Num
    high: Num


@dataclass
class Ref(Node):
    name: str


@dataclass
class Arg(Node):
    name: str | None  # None for a positional argument
    value: "Value"


@dataclass
class Call(Node):
    name: str
    args: list[Arg]


@dataclass
class List(Node):
    items: list["Value"]


@dataclass
class Member(Node):
    """``model * 3`` in a pool."""

    ref: Ref
    count: Num


Value = Union[Str, Num, Bool, Duration, Rate, Size, Range, Ref, Call, List, Member]


@dataclass
class Attr(Node):
    key: str
    key_pos: Pos
    value: Value


@dataclass
class Decl(Node):
    kind: str
    kind_pos: Pos
    name: str
    name_pos: Pos
    attrs: list[Attr]

    def get(self, key: str) -> Attr | None:
        for attr in self.attrs:
            if attr.key == key:
                return attr
        return None


@dataclass
class Import(Node):
    target: str  # "std.gsm8k" or a relative file path
    is_file: bool


@dataclass
class Module:
    path: str
    text: str
    imports: list[Import] = field(default_factory=list)
    decls: list[Decl] = field(default_factory=list)


def describe(value: Value) -> str:
    """How a value reads in a message: 'a string', 'the name llama8b', ..."""
    names = {
        Str: "a string", Num: "a number", Bool: "a boolean", Duration: "a duration",
        Rate: "a rate", Size: "a size", Range: "a range", List: "a list", Member: "a pool member",
    }
    if isinstance(value, Ref):
        return f"the name '{value.name}'"
    if isinstance(value, Call):
        return f"a call of '{value.name}'"
    return names.get(type(value), type(value).__name__)
