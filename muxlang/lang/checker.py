"""AST → checked ``ir.Spec``, or every mistake found, each at its file:line:column.

A pass separate from parsing (as in miniwdl): names (undefined, duplicate, wrong kind, with "did
you mean"), keys and value kinds per declaration (``schema``), ranges, stdlib names and their
arguments, composition cycles (the cycle is printed), and template slots that the task's declared
dataset fields cannot fill. It keeps going after an error so one run reports them all.
"""
from __future__ import annotations

import string
from typing import Any, Optional

from muxlang import ir
from muxlang.errors import Diagnostic, Pos, SpecError, did_you_mean
from muxlang.lang import ast
from muxlang.lang.schema import BAD, KINDS, SCHEMAS, valid_count

_ARTICLE = {"backend": "a backend", "model": "a model", "task": "a task", "mux": "a mux",
            "cascade": "a cascade", "tune": "a tune block"}


def _where(pos: Pos) -> str:
    """A position as a hint shows it: ``std.gsm8k:5:6`` for a stdlib module (its install path
    means nothing to a user), the file's own path otherwise."""
    from pathlib import Path

    from muxlang.stdlib.registry import module_path

    file = Path(pos.file)
    found = module_path(file.stem) if file.suffix == ".mux" else None
    if found is not None and found.resolve() == file.resolve():
        return f"std.{file.stem}:{pos.line}:{pos.column}"
    return str(pos)


def _unmatched_brace(template: str) -> tuple[int, str] | None:
    """The index and character of the first brace ``str.format`` would refuse: a '{' never
    closed, or a '}' outside any slot ('{{' and '}}' are literal braces). Follows Python's own
    scan: a slot runs from '{' to the '}' that brings the nesting back to zero."""
    i = 0
    while i < len(template):
        char = template[i]
        if template.startswith(char * 2, i) and char in "{}":
            i += 2
            continue
        if char == "}":
            return i, "}"
        if char == "{":
            depth, j = 1, i + 1
            while j < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                return i, "{"
            i = j
            continue
        i += 1
    return None


class Checker:
    def __init__(self, modules: list[ast.Module]):
        self.modules = modules
        self.root = modules[-1]
        self.texts = {m.path: m.text for m in modules}
        self.diagnostics: list[Diagnostic] = []
        self.decls: dict[str, ast.Decl] = {}
        self.values: dict[str, dict[str, Any]] = {}  # decl name -> key -> converted value
        self.spec = ir.Spec(path=self.root.path, text=self.root.text,
                            imports=[m.path for m in modules[:-1]])
        self._building: list[str] = []
        # names declared with a misspelt kind: reported once there, not again at every use
        self._unknown_kind: set[str] = set()
        self._cycles: set[frozenset[str]] = set()

    # -- reporting -------------------------------------------------------------------------
    def report(self, node: ast.Node | Pos, message: str, hint: str | None = None) -> None:
        pos = node if isinstance(node, Pos) else node.pos
        lines = self.texts.get(pos.file, "").splitlines()
        line = lines[pos.line - 1] if 0 < pos.line <= len(lines) else None
        self.diagnostics.append(Diagnostic(pos.file, pos.line, pos.column, message, hint, line))

    # -- the pass --------------------------------------------------------------------------
    def check(self) -> ir.Spec:
        self._collect()
        for decl in self.decls.values():
            self.values[decl.name] = self._convert_attrs(decl)
        for kind, build in (("backend", self._backend), ("model", self._model),
                            ("task", self._task), ("mux", self._mux),
                            ("cascade", self._cascade), ("tune", self._tune)):
            for decl in [d for d in self.decls.values() if d.kind == kind]:
                build(decl)
        if not self.root.decls and not self.root.imports:
            self.report(Pos(self.root.path, 1, 1), "empty spec: nothing is declared",
                        "declare a backend, models, a task and a mux (see docs/language.md)")
        if self.diagnostics:
            order = {m.path: i for i, m in enumerate(self.modules)}
            self.diagnostics.sort(key=lambda d: (order.get(d.file, -1), d.line, d.column))
            raise SpecError(self.diagnostics)
        self.spec.root_names = [d.name for d in self.root.decls if d.name in self.decls]
        return self.spec

    def _collect(self) -> None:
        for module in self.modules:
            for decl in module.decls:
                if decl.kind not in KINDS:
                    self.report(decl.kind_pos, f"unknown declaration kind '{decl.kind}'",
                                did_you_mean(decl.kind, KINDS)
                                or f"declarations are {', '.join(KINDS)}")
                    self._unknown_kind.add(decl.name)
                    continue
                first = self.decls.get(decl.name)
                if first is not None:
                    self.report(decl.name_pos, f"'{decl.name}' is declared twice",
                                f"first declared at {_where(first.name_pos)}")
                    continue
                self.decls[decl.name] = decl

    def _convert_attrs(self, decl: ast.Decl) -> dict[str, Any]:
        schema = SCHEMAS[decl.kind]
        values: dict[str, Any] = {}
        seen: dict[str, ast.Attr] = {}
        for attr in decl.attrs:
            if attr.key in seen:
                self.report(attr.key_pos, f"'{attr.key}' is set twice in {decl.kind} "
                            f"'{decl.name}'", f"first set at {_where(seen[attr.key].key_pos)}")
                continue
            seen[attr.key] = attr
            field = schema.fields.get(attr.key)
            if field is None:
                hint = did_you_mean(attr.key, schema.fields) or (
                    f"{decl.kind} keys are {', '.join(schema.fields)}")
                self.report(attr.key_pos, f"unknown key '{attr.key}' in {decl.kind} "
                            f"'{decl.name}'", hint)
                continue
            values[attr.key] = field.convert(attr.value, self.report)
        for key in schema.required:
            if key not in seen:
                self.report(decl.name_pos, f"{decl.kind} '{decl.name}' needs '{key}'",
                            f"add a line: {key} = ...")
                values[key] = BAD
        return values

    # -- references ------------------------------------------------------------------------
    def _resolve(self, ref: ast.Ref, kinds: tuple[str, ...]) -> ast.Decl | None:
        decl = self.decls.get(ref.name)
        wanted = " or ".join(_ARTICLE[k] for k in kinds)
        if decl is None and ref.name in self._unknown_kind:
            return None
        if decl is None:
            candidates = [d.name for d in self.decls.values() if d.kind in kinds]
            hint = did_you_mean(ref.name, candidates) or (
                f"declare it: {kinds[0]} {ref.name} {{ ... }}")
            self.report(ref, f"'{ref.name}' is not defined (expected {wanted})", hint)
            return None
        if decl.kind not in kinds:
            self.report(ref, f"'{ref.name}' is {_ARTICLE[decl.kind]}, but {wanted} is expected "
                        "here", f"'{ref.name}' is declared at {_where(decl.name_pos)}")
            return None
        return decl

    def _get(self, decl: ast.Decl, key: str, default: Any = None) -> Any:
        value = self.values[decl.name].get(key, default)
        return None if value is BAD else value

    def _given(self, decl: ast.Decl, **keys: str) -> dict[str, Any]:
        """``{ir field: value}`` for the spec keys ``decl`` sets (``ir_field="spec_key"``).

        A key left out keeps the default of its ``muxlang.ir`` dataclass field: defaults are
        written there once, never here (and the runtime reads the same ones).
        """
        values = self.values[decl.name]
        return {name: values[key] for name, key in keys.items()
                if key in values and values[key] is not BAD}

    def _bad(self, decl: ast.Decl, *keys: str) -> bool:
        return any(self.values[decl.name].get(k) is BAD for k in keys)

    # -- builders, one per kind ------------------------------------------------------------
    def _backend(self, decl: ast.Decl) -> None:
        get = lambda key, default=None: self._get(decl, key, default)  # noqa: E731
        kind = get("kind")
        if kind in ("openai", "ollama") and "url" not in self.values[decl.name]:
            self.report(decl.name_pos, f"backend '{decl.name}' needs 'url'",
                        'add a line: url = "http://127.0.0.1:8000/v1"')
        if kind is None:
            return
        backend = ir.Backend(
            name=decl.name, kind=kind, pos=decl.name_pos,
            **self._given(decl, url="url", api_key_env="api_key", concurrency="concurrency",
                          rate="rate", timeout="timeout", retries="retries",
                          retry_time="retry_time", supports_n="n",
                          max_response="max_response", rate_scope="rate_scope"))
        self.spec.backends[decl.name] = backend

    def _model(self, decl: ast.Decl) -> None:
        ref = self._get(decl, "backend")
        target = self._resolve(ref, ("backend",)) if ref is not None else None
        backend = self.spec.backends.get(target.name) if target is not None else None
        if backend is None:
            return
        given = self._given(decl, temperature="temperature", top_p="top_p",
                            max_tokens="max_tokens", seed="seed", price_input="input_price",
                            price_output="output_price", accuracy="accuracy")
        for price in ("price_input", "price_output"):  # the spec says USD per million tokens
            if price in given:
                given[price] *= 1e-6
        self.spec.models[decl.name] = ir.Model(
            name=decl.name, backend=backend, id=self._get(decl, "id", decl.name),
            pos=decl.name_pos, **given)

    def _task(self, decl: ast.Decl) -> None:
        fields = self._get(decl, "fields")
        slots: list[str] = []
        for key in ("system", "user"):
            attr = decl.get(key)
            if attr is None or self._bad(decl, key):
                continue
            slots += self._slots(attr.value, fields)
        gold = self._get(decl, "gold")
        if gold is not None and fields is not None and gold not in fields:
            attr = decl.get("gold")
            self.report(attr.value, f"gold field '{gold}' is not among the task's fields",
                        did_you_mean(gold, fields) or f"fields are {', '.join(fields)}")
        functions = {"extract": self._function(decl, "extract", "extractor"),
                     "equivalence": self._function(decl, "equivalence", "equivalence")}
        if self._bad(decl, "user"):
            return
        self.spec.tasks[decl.name] = ir.Task(
            name=decl.name, user=self._get(decl, "user", ""), system=self._get(decl, "system"),
            gold=gold, fields=tuple(dict.fromkeys(slots)), pos=decl.name_pos,
            **{k: v for k, v in functions.items() if v is not None})

    def _slots(self, node: ast.Str, fields: list[str] | None) -> list[str]:
        brace = _unmatched_brace(node.value)
        if brace is not None:
            index, char = brace
            if char == "{":
                self.report(self._brace_pos(node, index),
                            "unclosed '{' in the template: write {{ for a literal brace",
                            "a slot reads {field}, e.g. {question}")
            else:
                self.report(self._brace_pos(node, index),
                            "unmatched '}' in the template: write }} for a literal brace",
                            "a slot reads {field}, e.g. {question}")
            return []
        try:
            parsed = list(string.Formatter().parse(node.value))
        except ValueError as error:  # a conversion such as {x!} or {x!z}: rare
            self.report(node, f"bad template slot ({error})",
                        "a slot reads {field}, e.g. {question}; write {{ and }} for literal braces")
            return []
        slots = []
        for _, name, _, _ in parsed:
            if name is None:
                continue
            base = name.split(".")[0].split("[")[0]
            if not base or base.isdigit():
                self.report(node, "a template slot needs a field name, e.g. {question}",
                            "write {{ and }} for literal braces")
                continue
            if '"' in base or "'" in base:  # JSON in a prompt: {"answer": ...}
                self.report(self._brace_pos(node, node.value.find("{" + base)),
                            f"template slot '{{{base}' is not a field name: write {{{{ and }}}} "
                            "for literal braces", None)
                continue
            slots.append(base)
            if fields is not None and base not in fields:
                self.report(self._slot_pos(node, base), f"template slot '{{{base}}}' is not a "
                            "field of the dataset", did_you_mean(base, fields)
                            or f"fields are {', '.join(fields)}")
        return slots

    def _brace_pos(self, node: ast.Str, index: int) -> Pos:
        """The position of the brace at ``node.value[index]`` in the source literal.

        Escapes and the dedent of triple-quoted strings change offsets but never braces, so the
        n-th brace of the value is the n-th brace of the literal; when the counts differ (a brace
        written as an escape such as \\x7b), the string's own position."""
        raw, value = self.texts[node.pos.file][node.start:node.end], node.value
        nth = sum(1 for c in value[:index] if c in "{}")
        braces = [i for i, c in enumerate(raw) if c in "{}"]
        if len(braces) != sum(1 for c in value if c in "{}"):
            return node.pos
        return self._offset_pos(node, raw, braces[nth])

    def _offset_pos(self, node: ast.Str, raw: str, offset: int) -> Pos:
        before = raw[:offset]
        newlines = before.count("\n")
        if newlines == 0:
            return Pos(node.pos.file, node.pos.line, node.pos.column + offset)
        return Pos(node.pos.file, node.pos.line + newlines, offset - before.rfind("\n"))

    def _slot_pos(self, node: ast.Str, slot: str) -> Pos:
        """The position of ``{slot`` inside the string literal, for a precise caret."""
        raw = self.texts[node.pos.file][node.start:node.end]
        offset = raw.find("{" + slot)
        if offset < 0:
            return node.pos
        return self._offset_pos(node, raw, offset)

    def _function(self, decl: ast.Decl, key: str, table: str) -> ir.Call | None:
        """The stdlib function ``key`` names; None when unset or wrong (the ir default applies)."""
        node = self._get(decl, key)
        if node is None:
            return None
        return self._stdlib_call(node, table)

    def _stdlib_call(self, node: ast.Ref | ast.Call, table: str) -> ir.Call | None:
        from muxlang.stdlib.registry import EQUIVALENCES, EXTRACTORS, RULES

        entries = {"extractor": EXTRACTORS, "equivalence": EQUIVALENCES, "rule": RULES}[table]
        entry = entries.get(node.name)
        if entry is None:
            self.report(node, f"unknown {table} '{node.name}'", did_you_mean(node.name, entries)
                        or f"known: {', '.join(entries)}")
            return None
        args = node.args if isinstance(node, ast.Call) else []
        params = {p.name: p for p in entry.params}
        given: dict[str, Any] = {}
        ok = True
        for index, arg in enumerate(args):
            if arg.name is None:
                if index >= len(entry.params):
                    self.report(arg, f"{node.name} takes {len(entry.params)} argument"
                                f"{'s' if len(entry.params) != 1 else ''}", None)
                    ok = False
                    continue
                name = entry.params[index].name
            else:
                name = arg.name
            param = params.get(name)
            if param is None:
                self.report(arg, f"{node.name} has no argument '{name}'",
                            did_you_mean(name, params) or (
                                f"arguments: {', '.join(params)}" if params else "it takes none"))
                ok = False
                continue
            value = self._argument(node.name, param, arg.value)
            ok = ok and value is not BAD
            given[name] = value
        for param in entry.params:
            if param.required and param.name not in given:
                self.report(node, f"{node.name} needs the argument '{param.name}'", None)
                ok = False
        if ok:
            ok = self._factory_accepts(node, entry, given)
        return ir.Call(node.name, tuple(given.items())) if ok else None

    def _factory_accepts(self, node: ast.Ref | ast.Call, entry: Any, given: dict[str, Any]) -> bool:
        """Well-typed arguments can still be refused by the factory (a regex group the pattern
        lacks, digits as choice letters, a negative tolerance): ask the stdlib's own argument
        check, so ``check`` catches what ``run`` would, with the caret on the argument at fault."""
        from muxlang.errors import MuxError

        try:
            entry.check_arguments(given)
        except MuxError as error:
            message = str(error)
            at: ast.Node = node
            for arg in node.args if isinstance(node, ast.Call) else []:
                name = arg.name or entry.params[node.args.index(arg)].name
                if f"'{name}'" in message:
                    at = arg
                    break
            self.report(at, message, None)
            return False
        return True

    def _argument(self, function: str, param: Any, value: ast.Value) -> Any:
        from muxlang.stdlib.registry import EXTRACTORS

        if param.name == "then":
            name = value.name if isinstance(value, ast.Ref) else getattr(value, "value", None)
            if name not in EXTRACTORS or name == function:
                self.report(value, f"'then' must name another extractor, found "
                            f"{ast.describe(value)}", did_you_mean(str(name), EXTRACTORS))
                return BAD
            return name
        python = {ast.Str: "value", ast.Num: "value", ast.Bool: "value"}
        if type(value) in python and isinstance(value.value, param.kind) and not (
                isinstance(value.value, bool) and bool not in param.kind):
            if param.name == "pattern":
                import re

                try:
                    re.compile(value.value)
                except re.error as error:
                    self.report(value, f"bad regular expression: {error}", None)
                    return BAD
            return value.value
        # int and float both read "a number": said once
        names = " or ".join(dict.fromkeys("a string" if k is str else "a number"
                                          for k in param.kind if k in (str, int, float)))
        self.report(value, f"argument '{param.name}' of {function} must be "
                    f"{names or 'a value'}, found {ast.describe(value)}", None)
        return BAD

    def _mux(self, decl: ast.Decl) -> ir.Mux | None:
        if decl.name in self.spec.muxes:
            return self.spec.muxes[decl.name]
        if decl.name in self._building:
            return None  # reported by the caller that closed the cycle
        self._building.append(decl.name)
        try:
            return self._build_mux(decl)
        finally:
            self._building.pop()

    def _build_mux(self, decl: ast.Decl) -> ir.Mux | None:
        task_ref = self._get(decl, "task")
        task_decl = self._resolve(task_ref, ("task",)) if task_ref is not None else None
        task = self.spec.tasks.get(task_decl.name) if task_decl else None
        pool = self._pool(decl, task)
        rule = self._function(decl, "rule", "rule")
        if task is None or pool is None:
            return None
        mux = ir.Mux(name=decl.name, task=task, pool=pool, pos=decl.name_pos,
                     **({"rule": rule} if rule is not None else {}),
                     **self._given(decl, tie_break="tie_break", validation="validation",
                                   accuracy="accuracy", adaptive="adaptive"))
        problem = ir.adaptive_rule_problem(mux.adaptive, mux.rule.name)
        if problem is not None:
            self.report(decl.get("adaptive").value, problem,
                        "use adaptive = off with this rule, or one of those rules")
        self.spec.muxes[decl.name] = mux
        return mux

    def _pool(self, decl: ast.Decl, task: ir.Task | None) -> list[ir.PoolMember] | None:
        items = self._get(decl, "pool")
        if items is None:
            return None
        pool: list[ir.PoolMember] = []
        seen: dict[str, ast.Node] = {}
        for item in items:
            ref = item.ref if isinstance(item, ast.Member) else item
            count = item.count.value if isinstance(item, ast.Member) else 1
            if ref.name in seen:
                self.report(ref, f"'{ref.name}' is in the pool twice",
                            f"draw more samples instead: {ref.name} * N")
                continue
            seen[ref.name] = ref
            target = self._resolve(ref, ("model", "mux"))
            if target is None:
                continue
            if isinstance(item, ast.Member) and not valid_count(item):
                continue  # reported by the schema; the name is still checked above
            if target.kind == "model":
                model = self.spec.models.get(target.name)
                if model is not None:
                    pool.append(ir.PoolMember(model, count, ref.pos))
                continue
            if isinstance(item, ast.Member):
                self.report(item.count, f"mux '{ref.name}' is a pool member drawn once; it has "
                            "no sample count", f"write {ref.name} without '* {item.count.text}'")
                continue
            if target.name in self._building:
                cycle = self._building[self._building.index(target.name):] + [target.name]
                if frozenset(cycle) in self._cycles:
                    continue
                self._cycles.add(frozenset(cycle))
                self.report(ref, "composition cycle: " + " -> ".join(cycle),
                            "a mux cannot contain itself, directly or through other muxes")
                continue
            inner = self._mux(target)
            if inner is None:
                continue
            if inner.adaptive != "off":
                self.report(ref, f"mux '{ref.name}' samples adaptively (adaptive = "
                            f"{inner.adaptive}), so it cannot be a pool member",
                            "a nested mux draws its full budget: its parent needs its exact "
                            "confidence; set adaptive on the outer mux instead")
                continue
            if task is not None and inner.task is not task:
                self.report(ref, f"mux '{ref.name}' answers task '{inner.task.name}', but "
                            f"'{decl.name}' answers task '{task.name}'",
                            "members of a mux must answer the same task")
                continue
            pool.append(ir.PoolMember(inner, 1, ref.pos))
        return pool if len(pool) == len(items) else None

    def _cascade(self, decl: ast.Decl) -> None:
        refs = self._get(decl, "steps")
        if refs is None:
            return
        steps = []
        for ref in refs:
            target = self._resolve(ref, ("mux",))
            mux = self.spec.muxes.get(target.name) if target else None
            if mux is None:
                continue
            if steps and mux.task is not steps[0].task:
                self.report(ref, f"step '{ref.name}' answers task '{mux.task.name}', but the "
                            f"first step answers '{steps[0].task.name}'",
                            "every step of a cascade must answer the same task")
                continue
            steps.append(mux)
        if len(steps) == len(refs):
            self.spec.cascades[decl.name] = ir.Cascade(
                decl.name, steps, pos=decl.name_pos, **self._given(decl, threshold="threshold"))

    def _tune(self, decl: ast.Decl) -> None:
        mux_ref = self._get(decl, "mux")
        target = self._resolve(mux_ref, ("mux",)) if mux_ref is not None else None
        mux = self.spec.muxes.get(target.name) if target else None
        candidates: list[ir.Model] = []
        for ref in self._get(decl, "candidates") or []:
            found = self._resolve(ref, ("model",))
            if found is not None and found.name in self.spec.models:
                candidates.append(self.spec.models[found.name])
        rules = [self._stdlib_call(node, "rule") for node in self._get(decl, "rules") or []]
        if mux is None or any(r is None for r in rules) or self._bad(decl, *self.values[decl.name]):
            return
        if not self.values[decl.name].get("candidates"):
            candidates = [m.member for m in mux.pool if isinstance(m.member, ir.Model)]
        samples = self._get(decl, "samples", ir.default(ir.Tune, "samples"))
        # unset, the pool may hold from one to every candidate (a default that depends on them)
        pool_size = self._get(decl, "pool_size", (1, len(candidates)))
        if pool_size[0] > len(candidates):
            attr = decl.get("pool_size")
            self.report(attr.value if attr else decl.name_pos,
                        f"pool size {pool_size[0]} is more than the {len(candidates)} "
                        "candidate models", None)
            return
        if samples[1] < 1:
            self.report(decl.get("samples").value, "the sample range must allow at least 1",
                        "write e.g. 0..9")
            return
        adaptive = self._tune_adaptive(decl, mux)
        if adaptive is None:
            return
        self.spec.tunes[decl.name] = ir.Tune(
            name=decl.name, mux=mux, candidates=candidates, samples=samples,
            pool_size=pool_size, rules=[r.name for r in rules] or [mux.rule.name],
            adaptive=adaptive, pos=decl.name_pos,
            **self._given(decl, objectives="objectives", trials="trials",
                          simulations="simulations", penalty="penalty", sampler="sampler",
                          seed="seed", max_samples="max_samples"))


    def _tune_adaptive(self, decl: ast.Decl, mux: ir.Mux) -> Optional[list[str]]:
        """The sampling policies a tune block tries: those it lists, each once, else the mux's
        own; None after reporting."""
        attr = decl.get("adaptive")
        if attr is None:
            return [mux.adaptive]
        listed = self._get(decl, "adaptive")
        for position, (node, policy) in enumerate(zip(attr.value.items, listed)):
            if policy in listed[:position]:
                self.report(node, f"adaptive {policy} is listed twice", "list each policy once")
                return None
        return list(listed)


def check_modules(modules: list[ast.Module]) -> ir.Spec:
    return Checker(modules).check()
