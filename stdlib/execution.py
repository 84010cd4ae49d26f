"""Code answers compared by execution: a sandbox, an execution cache and the ``execution``
equivalence (same outputs on the task's probe inputs = same answer).

``execution(probes, prefix, entry, timeout)`` is record-aware: a candidate's key depends on the
record it answers (its probe inputs, the prompt it completes). The plain ``key(answer)`` of an
``Equivalence`` cannot see the record, so the equivalence also offers

- ``for_record(record) -> key(answer)``: the key of a candidate for that record;
- ``prepare(pairs)``: run many (answer, record) pairs at once, in parallel across cores, so the
  ``for_record`` keys that follow are cache hits.

The store's reader (``muxlang.store.votes.Reader``) uses both when the equivalence has them; a
reader that knows no record (``key(answer)`` alone) gets ``None``: a code answer without its task
cannot be judged.

The program of a candidate is ``record[prefix] + answer`` (HumanEval: the prompt, a function
signature and docstring, then the sampled body); ``record[probes]`` is a list of Python
expressions, each the argument tuple of one call of ``record[entry]`` (the function's name). The
key is a hash of the call results: each result's ``repr`` with floats printed to 9 significant
digits (so 0.1 + 0.2 and 0.3 agree), an exception as ``!ExceptionName``, a call past its time as
``!Timeout``. A program that does not load (syntax error, missing function, top-level crash) or
whose every call raised or timed out has no answer (None).

The sandbox (``run_program``): a fresh ``python -I -S`` process per execution, in its own
session (the whole process group is killed afterwards, so nothing is left running), with
RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NOFILE and no core dumps; run as root it
also leaves the network namespace (no network at all); RLIMIT_NPROC = 0 stops any new process
of a non-root user at the kernel (root ignores it: there the audit hook below is what refuses
them). Its current and temp directory is a private
``mkdtemp`` directory, removed afterwards; its environment is empty but for HOME/TMPDIR there.
Inside, an audit hook (PEP 578, which Python code cannot remove) refuses ``os.system``, ``exec``,
``fork``, ``posix_spawn``, ``subprocess``, sockets, ``ctypes``, ``os.kill``, importing
``_posixsubprocess``/``ctypes``/``socket``/``subprocess``/``signal``/``resource``/``mmap``
and friends, and any write, rename, delete or mkdir outside the private directory. A wall timeout bounds the whole run, and the result channel
(stdout) is read up to ``MAX_OUTPUT`` bytes: a huge print is cut there and the process killed.
Prints of the candidate go to a capped buffer, never to the result channel.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

MAX_OUTPUT = 1 << 20  # bytes read from a sandbox's result channel
MEMORY = 512 << 20  # RLIMIT_AS
SANDBOX_VERSION = "1"  # part of the cache key: bump when results would change

# The zygote: a long-lived ``python -I -S`` process that forks one sandboxed child per job
# (a fork costs about a millisecond, a fresh interpreter tens). It reads length-prefixed JSON
# jobs {"program", "entry", "inputs", "timeout", "wall", "memory", "max_output"} on stdin and
# writes one length-prefixed JSON result per job on stdout. The audit hook is installed in the
# child only, after the fork: the zygote itself runs no candidate code.
_ZYGOTE = r'''
import sys, os, json, io, signal, math, select, shutil, tempfile, resource, struct, time
try:
    import ctypes
    _prctl = ctypes.CDLL(None).prctl
except Exception:
    _prctl = None
_tmp = None
_BLOCK = ("os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
          "subprocess.Popen", "socket.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill",
          "os.putenv", "os.unsetenv", "_posixsubprocess", "pty.", "resource.setrlimit",
          "os.setuid", "os.setgid", "shutil.", "os.chroot", "sqlite3.", "os.mkfifo",
          "os.mknod", "os.setsid", "os.setpgid", "mmap.", "winreg.", "webbrowser.")
_PATHED = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
           "os.symlink", "os.truncate", "os.utime", "os.chflags", "os.lchown")
def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "/proc/self/fd/%d" % path)
    except Exception:
        return False
    return p == _tmp or p.startswith(_tmp + os.sep)
_NOIMPORT = ("_posixsubprocess", "ctypes", "_ctypes", "socket", "_socket", "subprocess", "pty",
             "multiprocessing", "_multiprocessing", "asyncio", "signal", "resource", "mmap")
def _hook(event, args):
    if event == "import" and args and str(args[0]).split(".")[0] in _NOIMPORT:
        raise ImportError("sandbox: import of %s refused" % args[0])
    if event.startswith(_BLOCK):
        raise PermissionError("sandbox: %s refused" % event)
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writing and not isinstance(path, int) and not _inside(path):
            raise PermissionError("sandbox: writing %r refused" % (path,))
    elif event in _PATHED:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError("sandbox: %s %r refused" % (event, a))
class _Capped(io.TextIOBase):
    def __init__(self): self.n = 0
    def write(self, s):
        self.n += len(s)
        if self.n > 1 << 16:
            raise OSError("sandbox: output too large")
        return len(s)
    def writable(self): return True
class _Timeout(BaseException): pass
def _alarm(signum, frame): raise _Timeout()
def _canon(v, depth=0):
    if depth > 50: return "..."
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")): return repr(v)
        return "f" + format(v, ".9g")
    if isinstance(v, (list, tuple)):
        body = [_canon(x, depth + 1) for x in v]
        return ("L" if isinstance(v, list) else "T") + json.dumps(body)
    if isinstance(v, dict):
        return "D" + json.dumps(sorted([_canon(k, depth + 1), _canon(x, depth + 1)] for k, x in v.items()))
    if isinstance(v, (set, frozenset)):
        return "S" + json.dumps(sorted(_canon(x, depth + 1) for x in v))
    r = repr(v)
    return r if len(r) <= 4000 else "#" + str(hash(r))

def _run_job(job, tmp):
    global _tmp
    _tmp = os.path.realpath(tmp)
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(3000)
    sys.addaudithook(_hook)
    sys.stdout = sys.stderr = _Capped()
    sys.stdin = io.StringIO("")
    out = {"loaded": False, "outputs": []}
    ns = {"__name__": "__candidate__"}
    fn = None
    try:
        signal.setitimer(signal.ITIMER_REAL, job["timeout"])
        exec(compile(job["program"], "<candidate>", "exec"), ns)
        signal.setitimer(signal.ITIMER_REAL, 0)
        fn = ns.get(job["entry"])
        out["loaded"] = callable(fn)
    except BaseException as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        out["error"] = type(e).__name__
        fn = None
    if fn is not None and callable(fn):
        for text in job["inputs"]:
            try:
                args = eval(text, {"__builtins__": __builtins__, "math": math})
                if not isinstance(args, tuple):
                    args = (args,)
                signal.setitimer(signal.ITIMER_REAL, job["timeout"])
                try:
                    value = fn(*args)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                out["outputs"].append(_canon(value))
            except _Timeout:
                out["outputs"].append("!Timeout")
            except BaseException as e:
                signal.setitimer(signal.ITIMER_REAL, 0)
                out["outputs"].append("!" + type(e).__name__)
    return out

def _child(job, tmp, w):
    os.setsid()
    if _prctl is not None:
        _prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: the child dies with the fork server
    os.chdir(tmp)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 2)
    os.dup2(w, 1)
    os.closerange(3, 4096)
    os.environ.clear()
    os.environ.update({"HOME": tmp, "TMPDIR": tmp, "PATH": ""})
    cpu = max(1, int(job["wall"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    write = os.write
    out = _run_job(job, tmp)
    data = (json.dumps(out) + "\n").encode()
    while data:
        data = data[write(1, data):]

def _one(job):
    tmp = tempfile.mkdtemp(prefix="muxlang-exec-")
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _child(job, tmp, w)
        finally:
            os._exit(0)
    os.close(w)
    data = bytearray()
    status = "ok"
    try:
        while True:
            left = start + job["wall"] - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
            if len(data) > job["max_output"]:
                status = "output too large"
                break
    finally:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _, code = os.waitpid(pid, 0)
        os.close(r)
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - start
    if status == "ok":
        try:
            out = json.loads(bytes(data).decode("utf-8").strip().splitlines()[-1])
            outputs = [str(o) for o in out["outputs"]]
            outputs += ["!Killed"] * (len(job["inputs"]) - len(outputs))
            return {"loaded": bool(out["loaded"]), "outputs": outputs, "status": "ok",
                    "seconds": seconds}
        except Exception:
            status = "killed" if os.WIFSIGNALED(code) else "crashed"
    return {"loaded": False, "outputs": ["!" + status.replace(" ", "_")] * len(job["inputs"]),
            "status": status, "seconds": seconds}

def _serve():
    inp, outp = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        job = json.loads(inp.read(struct.unpack(">I", head)[0]))
        data = json.dumps(_one(job)).encode()
        outp.write(struct.pack(">I", len(data)) + data)
        outp.flush()

_serve()
'''


@dataclass(frozen=True)
class Result:
    """One sandboxed execution: per input, the canonical result text (``!Error`` forms)."""

    loaded: bool
    outputs: tuple[str, ...]
    status: str  # ok | timeout | killed | output too large | crashed
    seconds: float = 0.0


_LIBC: Any = None


def _libc() -> Any:
    """libc for unshare(2), loaded in the parent: a forked child of a threaded parent must not
    import or load anything."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL(None, use_errno=True)
        except Exception:  # noqa: BLE001
            _LIBC = False
    return _LIBC


def _preexec(libc: Any) -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0 and libc:
        # no network for the zygote and every child: a fresh network namespace holds only a
        # downed loopback (root only; otherwise the audit hook's socket refusals stand)
        libc.unshare(0x40000000)  # CLONE_NEWNET


class _Zygote:
    """One fork server; used by one thread at a time."""

    def __init__(self) -> None:
        libc = _libc()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _ZYGOTE], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
            env={"PATH": "", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"},
            cwd=tempfile.gettempdir(), preexec_fn=lambda: _preexec(libc))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict, deadline: float) -> dict | None:
        data = json.dumps(job).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            fd = self.proc.stdout.fileno()
            head = self._read(fd, 4, deadline)
            if head is None:
                return None
            body = self._read(fd, struct.unpack(">I", head)[0], deadline)
            return None if body is None else json.loads(body)
        except (OSError, ValueError):
            return None

    @staticmethod
    def _read(fd: int, n: int, deadline: float) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, n - len(buf))
                if not chunk:
                    return None
                buf += chunk
        return bytes(buf)

    def close(self) -> None:
        for kill in (lambda: os.killpg(self.proc.pid, signal.SIGKILL), self.proc.kill):
            try:
                kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


_IDLE: list[_Zygote] = []
_IDLE_LOCK = threading.Lock()


def _take() -> _Zygote:
    with _IDLE_LOCK:
        while _IDLE:
            zygote = _IDLE.pop()
            if zygote.alive():
                return zygote
            zygote.close()
    return _Zygote()


def _give(zygote: _Zygote) -> None:
    with _IDLE_LOCK:
        _IDLE.append(zygote)


@atexit.register
def shutdown() -> None:
    """Stop the idle fork servers (they also exit on their own when this process dies)."""
    with _IDLE_LOCK:
        zygotes = list(_IDLE)
        _IDLE.clear()
    for zygote in zygotes:
        zygote.close()


def run_program(program: str, entry: str, inputs: Sequence[str], *, timeout: float = 2.0,
                memory: int = MEMORY, max_output: int = MAX_OUTPUT) -> Result:
    """Run ``entry(*eval(input))`` of ``program`` for each input in a fresh sandboxed process
    (see the module docstring). ``timeout`` bounds each call and the load; the whole run gets
    ``timeout * (len(inputs) + 1) + 1`` seconds of wall time, and as much CPU time."""
    wall = timeout * (len(inputs) + 1) + 1.0
    job = {"program": program, "entry": entry, "inputs": list(inputs), "timeout": timeout,
           "wall": wall, "memory": memory, "max_output": max_output}
    start = time.monotonic()
    zygote = _take()
    out = zygote.run(job, start + wall + 10.0)
    if out is None:  # the fork server itself failed or hung: replace it
        zygote.close()
        return Result(False, ("!crashed",) * len(inputs), "crashed", time.monotonic() - start)
    _give(zygote)
    return Result(bool(out["loaded"]), tuple(out["outputs"]), out["status"],
                  float(out.get("seconds", 0.0)))


# --------------------------------------------------------------------------------------------
# the execution cache: (program hash, inputs hash) -> result, in a SQLite file


def cache_path() -> Path:
    """``$MUXLANG_EXEC_CACHE``, else ``~/.cache/muxlang/executions.sqlite``; ``off`` disables."""
    env = os.environ.get("MUXLANG_EXEC_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "muxlang" / "executions.sqlite"


class ExecutionCache:
    """Executions by (sha256 of program + entry, sha256 of inputs + timeout + sandbox version)."""

    def __init__(self, path: Path | str | None = None):
        self.path = None if str(path) == "off" else Path(path) if path is not None else cache_path()
        self._memory: dict[tuple[str, str], Result] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None and str(self.path) != "off":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS executions (program TEXT, inputs TEXT,"
                                 " result TEXT, PRIMARY KEY (program, inputs))")
                self._db.commit()
            except sqlite3.Error:
                self._db = None

    @staticmethod
    def keys(program: str, entry: str, inputs: Sequence[str], timeout: float) -> tuple[str, str]:
        p = hashlib.sha256(f"{entry}\0{program}".encode("utf-8", "surrogatepass")).hexdigest()
        i = hashlib.sha256(json.dumps([list(inputs), timeout, SANDBOX_VERSION]).encode()
                           ).hexdigest()
        return p, i

    def get(self, key: tuple[str, str]) -> Result | None:
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None or self._db is None:
                return hit
            row = self._db.execute("SELECT result FROM executions WHERE program=? AND inputs=?",
                                   key).fetchone()
        if row is None:
            return None
        loaded, outputs, status = json.loads(row[0])
        result = Result(loaded, tuple(outputs), status)
        with self._lock:
            self._memory[key] = result
        return result

    def put(self, key: tuple[str, str], result: Result) -> None:
        with self._lock:
            self._memory[key] = result
            if self._db is not None and result.status in ("ok", "killed", "output too large"):
                # a wall timeout may be the machine's load, not the program: not cached on disk
                self._db.execute("INSERT OR REPLACE INTO executions VALUES (?, ?, ?)",
                                 (*key, json.dumps([result.loaded, list(result.outputs),
                                                    result.status])))
                self._db.commit()


_CACHES: dict[str, ExecutionCache] = {}


def default_cache() -> ExecutionCache:
    path = str(cache_path())
    if path not in _CACHES:
        _CACHES[path] = ExecutionCache(path)
    return _CACHES[path]


def run_many(jobs: Iterable[tuple[str, str, Sequence[str]]], *, timeout: float = 2.0,
             cache: ExecutionCache | None = None, workers: int | None = None) -> list[Result]:
    """Run (program, entry, inputs) jobs, cached, in parallel (one sandbox per job, ``workers``
    at a time: default the number of cores)."""
    cache = cache if cache is not None else default_cache()
    jobs = list(jobs)
    keys = [ExecutionCache.keys(p, e, i, timeout) for p, e, i in jobs]
    results: list[Result | None] = [cache.get(k) for k in keys]
    todo: dict[tuple[str, str], int] = {}
    for n, (k, r) in enumerate(zip(keys, results)):
        if r is None and k not in todo:
            todo[k] = n

    def one(n: int) -> None:
        program, entry, inputs = jobs[n]
        cache.put(keys[n], run_program(program, entry, inputs, timeout=timeout))

    if todo:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            list(pool.map(one, todo.values()))
    return [r if r is not None else cache.get(k) for k, r in zip(keys, results)]


# --------------------------------------------------------------------------------------------
# the equivalence


def behaviour_key(result: Result) -> str | None:
    """The key of a behaviour: None when the program did not load or every call failed."""
    if not result.loaded or not result.outputs:
        return None
    if all(o.startswith("!") for o in result.outputs):
        return None
    return hashlib.sha256(json.dumps(list(result.outputs)).encode()).hexdigest()[:24]


def _probe_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


class ExecutionEquivalence:
    """``execution(...)``: see the module docstring."""

    def __init__(self, probes: str = "probes", prefix: str | None = "prompt",
                 entry: str = "entry_point", timeout: float = 2.0):
        from muxlang.stdlib import arguments

        arguments.execution(probes, prefix, entry, timeout)
        self.probes, self.prefix, self.entry, self.timeout = probes, prefix, entry, float(timeout)
        self.name = (f"execution(probes={probes!r}, prefix={prefix!r}, entry={entry!r}, "
                     f"timeout={self.timeout!r})")
        self.cache: ExecutionCache | None = None

    def _job(self, answer: str, record: dict) -> tuple[str, str, list[str]] | None:
        if not isinstance(answer, str) or not isinstance(record, dict):
            return None
        probes = _probe_list(record.get(self.probes))
        entry = record.get(self.entry, self.entry) if self.entry in record else self.entry
        if probes is None or not isinstance(entry, str):
            return None
        prefix = record.get(self.prefix, "") if self.prefix else ""
        return (prefix if isinstance(prefix, str) else "") + answer, entry, probes

    def key(self, answer: str) -> str | None:  # no record: a code answer cannot be judged
        return None

    __call__ = key

    def prepare(self, pairs: Iterable[tuple[str | None, dict]]) -> None:
        jobs = [j for j in (self._job(a, r) for a, r in pairs if a is not None) if j is not None]
        run_many(jobs, timeout=self.timeout, cache=self.cache)

    def for_record(self, record: dict):
        def key(answer: str) -> str | None:
            job = self._job(answer, record)
            if job is None:
                return None
            return behaviour_key(run_many([job], timeout=self.timeout, cache=self.cache)[0])

        return key

    def equivalent(self, a: str, b: str) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Equivalence({self.name})"


def execution(probes: str = "probes", prefix: str | None = "prompt", entry: str = "entry_point",
              timeout: float = 2.0) -> ExecutionEquivalence:
    return ExecutionEquivalence(probes, prefix, entry, timeout)


# --------------------------------------------------------------------------------------------
# the gold judge: a task's unit tests


_CHECK_ENTRY = "__muxlang_check__"


def unit_test_job(program: str, test: str, entry: str) -> tuple[str, str, list[str]]:
    """A job whose one call runs ``check(entry)`` (HumanEval's test) on ``program``: its output
    is ``None`` when every assertion held, ``!AssertionError`` (or another error) otherwise."""
    wrapped = (f"{program}\n\n{test}\n\n"
               f"def {_CHECK_ENTRY}():\n    return check({entry})\n")
    return wrapped, _CHECK_ENTRY, ["()"]


def passes(results: Sequence[Result]) -> list[bool]:
    return [r.loaded and r.outputs == ("None",) for r in results]


def run_unit_tests(pairs: Iterable[tuple[str, dict]], *, prefix: str = "prompt",
                   test: str = "test", entry: str = "entry_point", timeout: float = 5.0,
                   cache: ExecutionCache | None = None) -> list[bool]:
    """For each (answer, record): does ``record[prefix] + answer`` pass ``record[test]``'s
    ``check(candidate)``? (pass@1 of a sample; ``timeout`` bounds the whole check)."""
    jobs = [unit_test_job(r.get(prefix, "") + a, r[test], r[entry]) for a, r in pairs]
    return passes(run_many(jobs, timeout=timeout, cache=cache))


execution.record_aware = True  # type: ignore[attr-defined]  # keys depend on the record
