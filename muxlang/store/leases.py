"""Leases: concurrent collectors claim the samples they draw, so none is paid for twice.

Several ``muxlang collect`` processes (on one host or on many hosts sharing a PostgreSQL store)
may work on the same spec and dataset. Before drawing sample ``index`` of a request key, a worker
claims ``(key hash, index)`` in the ``collect_leases`` table: the row names the worker (``owner``)
and an expiry on the database's clock (so hosts whose clocks differ agree on it). A worker only
draws what it holds; what another worker holds it leaves alone and checks again later. When a
sample is stored, its lease is deleted (in batches, after the sample's commit); meanwhile a claim
finds the sample stored, so it is never drawn twice.

A worker renews its leases while its requests are in flight (``renew``). A worker that dies
(``kill -9``, a lost host) stops renewing: its leases expire after ``ttl`` seconds and another
worker takes them over. A lease whose owner was a process of this host (and pid namespace) that no
longer exists is taken over at once, without waiting for the expiry.

Claiming is atomic on both databases: new leases are ``INSERT ... ON CONFLICT DO NOTHING``; a stale
lease is taken by an ``UPDATE`` conditional on the owner and expiry that were read (whoever
updates it first wins; the other's update matches no row). SQLite serialises writers anyway
(``BEGIN IMMEDIATE``); on PostgreSQL rows are claimed in one sorted order, and a deadlock or
serialization failure is retried. After claiming, samples stored meanwhile by others are looked
up in the same transaction: a worker never draws a sample that was stored before its claim.

    leases = Leases(store, ttl=30)
    claim = leases.claim([(key_hash, [0, 1, 2]), ...])   # Claim: mine, stored, held, wait
    leases.release([(key_hash, 0), (key_hash, 1)])      # stored (or failed): others may claim
    leases.renew()                                      # every ttl / 3 while working
    leases.release_all()                                # at the end, also after Ctrl-C
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from sqlalchemy import and_, bindparam, delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from muxlang.errors import StoreError
from muxlang.store import schema as s
from muxlang.store.core import CHUNK, Store, _alive, in_values

Pair = tuple[str, int]  # (key hash, sample index)

RETRY_STATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
DEFAULT_TTL = 30.0


def here() -> str:
    """Where this process's pids mean something: the host's name, and a digest of its boot id
    and pid namespace (two containers, or two machines, with one host name are told apart)."""
    seen = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            seen.append(os.readlink(path) if path.endswith("/pid") else
                        Path(path).read_text().strip())
        except OSError:
            seen.append("")
    digest = hashlib.sha256("|".join(seen).encode()).hexdigest()[:10] if any(seen) else "-"
    return f"{digest}:{socket.gethostname()[:30]}"


def worker_id() -> str:
    """A new owner name: random, then this process's pid and place (to spot dead local owners)."""
    return f"{uuid.uuid4().hex[:12]}:{os.getpid()}:{here()}"[:64]


def _dead_here(owner: str, place: str) -> bool:
    """Whether ``owner`` was a process of this host (and pid namespace) that no longer exists."""
    parts = owner.split(":", 2)
    if len(parts) != 3 or parts[2] != place or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and not _alive(pid)


@dataclass
class Claim:
    """What one ``claim`` found: ``mine`` (key hash → indices this worker now holds and must
    draw), ``stored`` (pairs asked for that were already stored), ``held`` (pairs another live
    worker holds) and ``wait`` (seconds until the first of those expires, None when none)."""

    mine: dict[str, list[int]] = field(default_factory=dict)
    stored: list[Pair] = field(default_factory=list)
    held: list[Pair] = field(default_factory=list)
    wait: float | None = None


class Leases:
    """This worker's leases in ``store`` (one owner per instance; see the module docstring)."""

    def __init__(self, store: Store, ttl: float = DEFAULT_TTL, owner: str | None = None):
        if not ttl > 0:
            raise ValueError(f"lease time must be > 0 seconds, not {ttl!r}")
        self.store = store
        self.ttl = float(ttl)
        self.owner = owner or worker_id()
        self.place = self.owner.split(":", 2)[2] if self.owner.count(":") >= 2 else ""
        self.taken_over = 0  # stale leases of other workers this one took over

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.store.engine.connect().execution_options(muxlang_write=True) as conn:
            with conn.begin():
                yield conn

    def _retrying(self, work, *args):
        """``work(conn, *args)`` in one write transaction, again on a PostgreSQL deadlock or
        serialization failure (claims take row locks that renewals and other claims also take)."""
        for attempt in range(8):
            try:
                with self._tx() as cx:
                    return work(cx, *args)
            except DBAPIError as error:
                state = getattr(getattr(error, "orig", None), "sqlstate", None)
                if state in RETRY_STATES and attempt < 7:
                    time.sleep(0.01 * (2 ** attempt))
                    continue
                if isinstance(error, OperationalError):
                    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                    raise StoreError(f"store {self.store.display_url}: {reason}",
                                     url=self.store.display_url) from None
                raise
        raise AssertionError("unreachable")

    def _now(self, cx: Connection) -> float:
        """The database's clock, in Unix seconds (every worker's expiries on one clock)."""
        if self.store.dialect == "postgresql":
            query = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
        else:
            query = "SELECT (julianday('now') - 2440587.5) * 86400.0"
        return float(cx.execute(text(query)).scalar_one())

    # -- claiming -------------------------------------------------------------------------------
    def claim(self, wanted: Iterable[tuple[str, Sequence[int]]]) -> Claim:
        """Claim every ``(key hash, indices)`` in one transaction (see ``Claim``)."""
        pairs = sorted({(h, int(i)) for h, indices in wanted for i in indices})
        if not pairs:
            return Claim()
        return self._retrying(self._claim, pairs)

    def _claim(self, cx: Connection, pairs: list[Pair]) -> Claim:
        L = s.collect_leases
        now = self._now(cx)
        until = now + self.ttl
        self.store.insert_ignore(cx, L, [
            {"key_hash": h, "sample_index": i, "owner": self.owner, "expires_at": until}
            for h, i in pairs], ["key_hash", "sample_index"])
        wanted = set(pairs)
        hashes = sorted({h for h, _ in pairs})
        owners = self._owners(cx, hashes, wanted)
        stale = sorted((pair, owner, expires) for pair, (owner, expires) in owners.items()
                       if owner != self.owner
                       and (expires < now or _dead_here(owner, self.place)))
        if stale:
            # taken over only if still as read: a renewal or another taker in between wins
            cx.execute(update(L).where(and_(L.c.key_hash == bindparam("h"),
                                            L.c.sample_index == bindparam("i"),
                                            L.c.owner == bindparam("o"),
                                            L.c.expires_at == bindparam("e")))
                       .values(owner=self.owner, expires_at=until),
                       [{"h": h, "i": i, "o": o, "e": e} for (h, i), o, e in stale])
            owners = self._owners(cx, hashes, wanted)
            self.taken_over += sum(owners.get(pair, ("",))[0] == self.owner
                                   for pair, _, _ in stale)
        # looked up after claiming: a sample stored before this claim committed is never drawn
        # again (its worker may not have deleted its lease yet: it is stored, not held)
        stored = self._stored(cx, hashes) & wanted
        claim = Claim(stored=sorted(stored))
        done = []
        for pair in pairs:
            owner, expires = owners.get(pair, (None, 0.0))
            if owner == self.owner:
                if pair in stored:
                    done.append(pair)
                else:
                    claim.mine.setdefault(pair[0], []).append(pair[1])
            elif pair not in stored:
                # held by another worker (or, rarely, deleted since: looked at again later)
                claim.held.append(pair)
                wait = max(0.0, expires - now)
                claim.wait = wait if claim.wait is None else min(claim.wait, wait)
        if done:
            self._delete(cx, done)
        # a stored sample's lease left by a worker that died before deleting it: nobody needs it
        left = [(pair, owners[pair]) for pair in claim.stored
                if pair in owners and owners[pair][0] != self.owner
                and (owners[pair][1] < now or _dead_here(owners[pair][0], self.place))]
        if left:
            L = s.collect_leases
            cx.execute(delete(L).where(and_(L.c.key_hash == bindparam("h"),
                                            L.c.sample_index == bindparam("i"),
                                            L.c.owner == bindparam("o"),
                                            L.c.expires_at == bindparam("e"))),
                       [{"h": h, "i": i, "o": o, "e": e} for (h, i), (o, e) in sorted(left)])
        return claim

    def _owners(self, cx: Connection, hashes: list[str],
                wanted: set[Pair]) -> dict[Pair, tuple[str, float]]:
        L = s.collect_leases.c
        out: dict[Pair, tuple[str, float]] = {}
        for start in range(0, len(hashes), CHUNK):
            query = select(L.key_hash, L.sample_index, L.owner, L.expires_at).where(
                in_values(self.store.dialect, L.key_hash, hashes[start:start + CHUNK]))
            for row in cx.execute(query):
                pair = (row.key_hash, row.sample_index)
                if pair in wanted:
                    out[pair] = (row.owner, row.expires_at)
        return out

    def _stored(self, cx: Connection, hashes: list[str]) -> set[Pair]:
        c = s.samples.c
        out: set[Pair] = set()
        for start in range(0, len(hashes), CHUNK):
            query = select(c.key_hash, c.sample_index).where(
                in_values(self.store.dialect, c.key_hash, hashes[start:start + CHUNK]),
                c.error.is_(None))
            out.update((row.key_hash, row.sample_index) for row in cx.execute(query))
        return out

    def _delete(self, cx: Connection, pairs: Sequence[Pair]) -> None:
        L = s.collect_leases
        cx.execute(delete(L).where(and_(L.c.key_hash == bindparam("h"),
                                        L.c.sample_index == bindparam("i"),
                                        L.c.owner == self.owner)),
                   [{"h": h, "i": i} for h, i in sorted(pairs)])

    # -- while working --------------------------------------------------------------------------
    def release(self, pairs: Sequence[Pair]) -> None:
        """Give up leases (e.g. their requests failed): another worker may draw them now."""
        if pairs:
            self._retrying(self._delete, list(pairs))

    def renew(self) -> int:
        """Push the expiry of every lease this worker holds ``ttl`` seconds on; how many."""
        L = s.collect_leases

        def work(cx: Connection) -> int:
            until = self._now(cx) + self.ttl
            return cx.execute(update(L).where(L.c.owner == self.owner)
                              .values(expires_at=until)).rowcount

        return self._retrying(work)

    def release_all(self) -> int:
        """Delete every lease this worker holds (its work ends, done or interrupted), and sweep
        what dead workers left: expired leases, and those of processes of this host that are
        gone (a lease nobody may hold any more is as good as none). Returns this worker's."""
        L = s.collect_leases

        def work(cx: Connection) -> int:
            mine = cx.execute(delete(L).where(L.c.owner == self.owner)).rowcount
            cx.execute(delete(L).where(L.c.expires_at < self._now(cx)))
            dead = [owner for (owner,) in cx.execute(select(L.c.owner).distinct())
                    if _dead_here(owner, self.place)]
            if dead:
                cx.execute(delete(L).where(L.c.owner == bindparam("o")),
                           [{"o": owner} for owner in sorted(dead)])
            return mine

        return self._retrying(work)

    def held(self) -> list[tuple[str, int, str, float]]:
        """Every lease in the store: (key hash, index, owner, expires at), for people and tests."""
        L = s.collect_leases.c
        with self.store.engine.connect() as cx:
            return [tuple(row) for row in cx.execute(
                select(L.key_hash, L.sample_index, L.owner, L.expires_at)
                .order_by(L.key_hash, L.sample_index))]
