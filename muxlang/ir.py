"""The checked, resolved form of a spec: what the compiler, runtime, store and optimizer consume.

The AST (``muxlang.lang.ast``) keeps what the user wrote, positions included; these classes keep
what it *means*: references are resolved to objects, units are converted (durations to seconds,
rates to requests per second, prices to USD per token), defaults are filled in. Nothing here ever
holds a secret: a backend names the environment variable its key lives in, and the runtime reads
it at the last moment.

Every default of a spec key is written once, as the default of its dataclass field here: the
checker passes only the keys a spec sets, and the runtime (``BackendSettings``) and the optimizer
read the rest from these classes (``default(Backend, "timeout")``). Here rather than in the
schema, because this module is below the language front end and the runtime both: they can read
it, and it can read neither.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterator, Union

from muxlang.errors import NOWHERE, Pos


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls`` (the one place it is written)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{cls.__name__}.{name} has no default")


@dataclass(frozen=True)
class Call:
    """A named stdlib function with its arguments, e.g. ``numeric(tolerance = 1e-6)``."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    def __str__(self) -> str:
        if not self.args:
            return self.name
        inner = ", ".join(f"{k} = {v!r}" for k, v in self.args)
        return f"{self.name}({inner})"


@dataclass
class Backend:
    name: str
    kind: str  # "openai" | "ollama" | "replay"
    url: str = ""
    api_key_env: str | None = None  # name of the environment variable, never the key itself
    concurrency: int = 8
    rate: float | None = None  # requests per second; None = unlimited
    timeout: float = 60.0  # seconds per request
    retries: int = 3  # extra attempts after the first
    retry_time: float = 120.0  # total seconds a request may spend retrying
    supports_n: bool | None = None  # None = probe once per model
    max_response: int = 8_000_000  # bytes a response may hold, once decompressed
    # whom a server's 429 (or 503 with Retry-After) pauses: "backend", "model", or "auto" (the
    # model when the server's error names it, as LiteLLM's per-model-group limits do)
    rate_scope: str = "auto"
    pos: Pos = NOWHERE


@dataclass
class Model:
    name: str
    backend: Backend
    id: str  # the model id the server knows
    temperature: float = 0.3
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    price_input: float = 0.0  # USD per input token (the spec writes USD per million tokens)
    price_output: float = 0.0  # USD per output token
    accuracy: float | None = None  # validation accuracy typed into the spec, if any
    pos: Pos = NOWHERE

    def sampling_params(self) -> dict[str, Any]:
        """Every parameter that changes what the server returns: part of the sample cache key."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


@dataclass
class Task:
    name: str
    user: str  # template with {field} slots
    system: str | None = None
    extract: Call = Call("final_number")
    equivalence: Call = Call("exact")
    gold: str | None = None  # record field holding the gold answer
    fields: tuple[str, ...] = ()  # record fields the templates need
    pos: Pos = NOWHERE


@dataclass
class PoolMember:
    """One entry of a mux's pool: a model drawn ``samples`` times, or a nested mux (samples = 1)."""

    member: Union[Model, "Mux"]
    samples: int = 1
    pos: Pos = NOWHERE

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def is_model(self) -> bool:
        return isinstance(self.member, Model)


# the rules adaptive sampling knows how to stop early for (muxlang.semantics.exact_draws); a
# plugin rule's own stopping condition is unknown, so the checker refuses adaptive with it
ADAPTIVE_RULES = ("slm_mux", "majority", "single")


def adaptive_rule_problem(adaptive: str, rule: str) -> str | None:
    """Why a mux cannot sample adaptively under its rule (the checker and ``Session`` say it),
    else None."""
    if adaptive == "off" or rule in ADAPTIVE_RULES:
        return None
    return (f"adaptive = {adaptive} stops by the rules of {', '.join(ADAPTIVE_RULES)}; rule "
            f"{rule} is not one of them")


def delta_policy(p: float) -> str:
    """``delta(p)`` as a mux's ``adaptive`` holds it: p in its shortest exact form, so that
    0.9999999 stays below 1 (``:g`` made it ``delta(1)``, out of range) and 0.0500001 is not
    silently 0.05. The checker and ``semantics.policy_of`` both write it here."""
    return f"delta({float(p)!r})"


@dataclass
class Mux:
    name: str
    task: Task
    pool: list[PoolMember]
    rule: Call = Call("slm_mux")
    tie_break: str = "accuracy"  # "accuracy" (validation accuracy, then pool order) | "order"
    validation: str | None = None  # dataset name in the store to read validation accuracies from
    accuracy: float | None = None  # when this mux is itself a pool member of another mux
    adaptive: str = "off"  # "off" | "exact" | "delta(p)": draw in rounds, stop once settled
    pos: Pos = NOWHERE


@dataclass
class Cascade:
    """Run ``steps`` in order; stop at the first whose confidence reaches ``threshold``."""

    name: str
    steps: list[Mux]
    threshold: float = 0.5
    pos: Pos = NOWHERE

    @property
    def task(self) -> Task:
        return self.steps[0].task


@dataclass
class Tune:
    name: str
    mux: Mux
    candidates: list[Model]
    samples: tuple[int, int] = (0, 3)  # budget range per candidate; 0 = not in the pool
    pool_size: tuple[int, int] = (1, 5)  # a spec that leaves it out gets 1..len(candidates)
    objectives: list[str] = field(default_factory=lambda: ["accuracy"])
    rules: list[str] = field(default_factory=lambda: ["slm_mux"])
    trials: int = 100  # optimizer trials (configurations tried)
    simulations: int = 100  # seeded resampling trials per configuration
    penalty: float = 1.0  # lambda of UnionAcc - lambda * Contradiction
    sampler: str = "auto"  # "auto" | "grid" | "tpe" | "nsga2"
    seed: int = 0
    max_samples: int | None = None  # samples per item at most, over the whole pool
    # the mux's sampling policies tried: off and exact in the search, delta(p) on its winner
    # (optimizer/policies.py); a spec that leaves it out gets the mux's own policy
    adaptive: list[str] = field(default_factory=lambda: ["off"])
    pos: Pos = NOWHERE


Runnable = Union[Mux, Cascade]


@dataclass
class Spec:
    """A whole checked program: the root file and everything it imports, merged."""

    path: str
    text: str
    backends: dict[str, Backend] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    muxes: dict[str, Mux] = field(default_factory=dict)
    cascades: dict[str, Cascade] = field(default_factory=dict)
    tunes: dict[str, Tune] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)  # resolved paths, in load order
    root_names: list[str] = field(default_factory=list)  # declared in the root file, in order

    def runnable(self, name: str | None = None) -> Runnable:
        """The mux or cascade to run: the named one, else the last declared in the root file.

        Raises KeyError with the available names when there is none to pick.
        """
        table: dict[str, Runnable] = {**self.muxes, **self.cascades}
        if name is not None:
            if name not in table:
                raise KeyError(name)
            return table[name]
        for candidate in reversed(self.root_names):
            if candidate in table:
                return table[candidate]
        if table:
            return list(table.values())[-1]
        raise KeyError("no mux or cascade declared")


def model_members(runnable: Runnable) -> Iterator[tuple[Mux, PoolMember]]:
    """Every model member a mux or cascade draws from, with the mux it belongs to: cascade steps
    in order, each pool in order, nested muxes where they stand (depth first). A model drawn in
    several places comes once per place; callers fold them as they need."""
    def visit(mux: Mux) -> Iterator[tuple[Mux, PoolMember]]:
        for member in mux.pool:
            if member.is_model:
                yield mux, member
            else:
                yield from visit(member.member)  # type: ignore[arg-type]

    for mux in (runnable.steps if isinstance(runnable, Cascade) else [runnable]):
        yield from visit(mux)


def muxes_in(runnable: Runnable) -> list[Mux]:
    """Every mux a run selects with: the cascade's steps, and muxes nested as pool members."""
    found: list[Mux] = []
    todo = list(runnable.steps) if isinstance(runnable, Cascade) else [runnable]
    while todo:
        mux = todo.pop(0)
        if mux in found:
            continue
        found.append(mux)
        todo.extend(m.member for m in mux.pool if not m.is_model)  # type: ignore[misc]
    return found
