"""Many threads on one in-memory quota never hold more leases than the limit at once."""

from __future__ import annotations

import random
import threading
import time

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from domain import Deadline, FullJitter, NoCapacity, Quota
from domain.services import acquire_within

DB = "orders-mysql"
LIMIT = 3
THREADS = 32
ROUNDS = 5
HOLD_S = 0.002
TIME_BUDGET_S = 3.0


class HeldCounter:
    """Counts leases held at once, from just after a grant until just before the release,
    so a count above the limit proves the store really granted that many together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = 0
        self.most_held = 0
        self.granted = 0
        self.gave_up = 0
        self.lease_ids: set[str] = set()

    def took(self, lease_id: str) -> None:
        with self._lock:
            self.held += 1
            self.most_held = max(self.most_held, self.held)
            self.granted += 1
            self.lease_ids.add(lease_id)

    def giving_back(self) -> None:
        with self._lock:
            self.held -= 1

    def no_capacity(self) -> None:
        with self._lock:
            self.gave_up += 1


def test_thirty_two_threads_never_hold_more_leases_than_the_limit_at_once() -> None:
    clock = SystemClock()
    store = InMemoryLeaseStore(clock)
    store.set_quota(DB, Quota(limit=LIMIT, default_ttl_ms=30_000))
    counter = HeldCounter()
    stop_at = time.monotonic() + TIME_BUDGET_S
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        rng = random.Random(index)
        done = 0
        try:
            start.wait()
            while done < ROUNDS and time.monotonic() < stop_at:
                try:
                    grant = acquire_within(
                        store,
                        DB,
                        deadline=Deadline(clock.now_ms() + 500),
                        clock=clock,
                        backoff=FullJitter(1, 8),
                        rng=rng,
                        holder=f"worker-{index}",
                    )
                except NoCapacity:
                    counter.no_capacity()
                    continue
                counter.took(grant.lease.id)
                time.sleep(HOLD_S)
                counter.giving_back()
                store.release(DB, grant.token)
                done += 1
        except BaseException as error:  # surfaced to the test thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIME_BUDGET_S + 2)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert counter.most_held <= LIMIT, f"{counter.most_held} leases held at once"
    assert counter.most_held == LIMIT  # the threads really did contend for every lease
    assert counter.granted == THREADS * ROUNDS, f"{counter.granted} grants within the budget"
    assert len(counter.lease_ids) == counter.granted
    status = store.status(DB)
    assert (status.in_use, status.remaining, status.expired) == (0, LIMIT, 0)
    assert status.leases == ()
