"""Leases of concurrent collectors (muxlang/store/leases.py), on SQLite and PostgreSQL.

A claim is exclusive, atomic under concurrent claimers, skips what is stored, and a lease that
expired (or whose owner was a process of this host that is gone) passes to the next claimer.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

from muxlang.samples import SampleKey
from muxlang.store import NewSample
from muxlang.store.leases import Leases, here


def keys(count: int) -> list[SampleKey]:
    return [SampleKey("b", "m", "{}", f"{i:064x}") for i in range(count)]


def wanted(ks: list[SampleKey], k: int = 3) -> list[tuple[str, list[int]]]:
    return [(key.hash, list(range(k))) for key in ks]


def pairs(claim_mine: dict[str, list[int]]) -> set[tuple[str, int]]:
    return {(h, i) for h, indices in claim_mine.items() for i in indices}


def foreign(tag: str) -> str:
    """The owner name of a worker on another host (its pid means nothing here)."""
    return f"{tag}:1:0000000000:elsewhere"


def test_a_claim_is_exclusive_until_released(store):
    ks = keys(4)
    a, b = Leases(store, ttl=30), Leases(store, ttl=30)
    first = a.claim(wanted(ks))
    assert pairs(first.mine) == {(k.hash, i) for k in ks for i in range(3)}
    assert first.held == [] and first.stored == []
    second = b.claim(wanted(ks))
    assert second.mine == {} and len(second.held) == 12 and 29 < second.wait <= 30
    a.release([(ks[0].hash, 0)])
    third = b.claim(wanted(ks))
    assert pairs(third.mine) == {(ks[0].hash, 0)} and len(third.held) == 11
    assert a.release_all() == 11 and b.release_all() == 1
    assert a.held() == []


def test_stored_samples_are_not_claimed_and_their_leases_go(store):
    ks = keys(2)
    a, b = Leases(store), Leases(store)
    a.claim(wanted(ks))
    store.put_samples([NewSample(ks[0], 1, "stored by a")])  # a's lease on it is still there
    got = b.claim(wanted(ks))
    assert (ks[0].hash, 1) in got.stored and (ks[0].hash, 1) not in got.held
    assert got.mine == {}
    a.release_all()
    again = b.claim(wanted(ks))  # a gone: b gets everything but the stored sample
    assert pairs(again.mine) == {(k.hash, i) for k in ks for i in range(3)} - {(ks[0].hash, 1)}
    assert again.stored == [(ks[0].hash, 1)]
    assert (ks[0].hash, 1) not in {(h, i) for h, i, _, _ in b.held()}


def test_an_expired_lease_passes_to_the_next_claimer_and_renewal_keeps_it(store):
    ks = keys(3)
    gone = Leases(store, ttl=0.6, owner=foreign("gone"))
    alive = Leases(store, ttl=0.6, owner=foreign("alive"))
    gone.claim(wanted(ks[:2]))
    alive.claim(wanted(ks[2:]))
    taker = Leases(store, ttl=30)
    assert taker.claim(wanted(ks)).mine == {}  # both live: nothing to take
    for _ in range(4):  # "alive" renews; "gone" does not
        time.sleep(0.25)
        assert alive.renew() == 3
    got = taker.claim(wanted(ks))
    assert pairs(got.mine) == {(k.hash, i) for k in ks[:2] for i in range(3)}
    assert len(got.held) == 3 and taker.taken_over == 6
    assert gone.renew() == 0  # its leases are not its own any more
    owners = {owner for _, _, owner, _ in taker.held()}
    assert owners == {taker.owner, alive.owner}


def test_a_dead_local_owner_loses_its_leases_at_once(store):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True)
    dead = f"deadbeef0000:{int(child.stdout)}:{here()}"
    ks = keys(2)
    Leases(store, ttl=300, owner=dead).claim(wanted(ks))
    living = Leases(store, ttl=300, owner=f"cafe00000000:{os.getpid()}:{here()}")
    # a live process of this host (this one) keeps its claims; a dead one's go at once
    other = Leases(store, ttl=300)
    assert other.claim(wanted(ks)).mine != {}
    other.release_all()
    living.claim(wanted(ks))
    assert Leases(store, ttl=300).claim(wanted(ks)).mine == {}


def test_concurrent_claimers_never_share_a_sample(store):
    """Eight threads, each with its own engine connections, claim overlapping batches in random
    order as fast as they can: every (key, index) ends with exactly one of them."""
    ks = keys(60)
    everything = {(k.hash, i) for k in ks for i in range(3)}
    got: dict[int, set] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            mine = got.setdefault(n, set())
            leases = Leases(store, ttl=30)
            order = list(ks)
            random.Random(n).shuffle(order)
            start.wait()
            for at in range(0, len(order), 7):
                mine |= pairs(leases.claim(wanted(order[at:at + 7])).mine)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    claimed = [pair for mine in got.values() for pair in mine]
    assert len(claimed) == len(set(claimed)) == len(everything)
    assert set(claimed) == everything
