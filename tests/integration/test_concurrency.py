"""Many threads against one quota on the embedded DynamoDB: the limit is never passed."""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

import pytest

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from domain import Deadline, FullJitter, Quota, acquire_within

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

THREADS = 32


# 3 fits one item; 40 is split over shards (`domain.shards`), each enforcing its share. On 3
# most tries are refused (ten threads a lease), so fewer rounds make as many collisions.
@pytest.mark.parametrize(("LIMIT", "ROUNDS"), [(3, 8), (40, 20)])
def test_32_threads_never_hold_more_than_the_limit_and_leave_the_quota_whole(
    dynamodb_client: DynamoDBClient,
    leases_table: str,
    LIMIT: int,  # noqa: N803
    ROUNDS: int,  # noqa: N803
) -> None:
    clock = SystemClock()
    store = DynamoDBLeaseStore(dynamodb_client, leases_table, clock)
    store.set_quota("burst-db", Quota(limit=LIMIT, default_ttl_ms=60_000))
    lock = threading.Lock()
    holding = 0
    most_held = 0
    most_seen_live = 0
    granted = 0
    failures: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def worker(seed: int) -> None:
        nonlocal holding, most_held, granted
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(ROUNDS):
                grant = acquire_within(
                    store,
                    "burst-db",
                    holder=f"worker/{seed}",
                    deadline=Deadline(clock.now_ms() + 60_000),
                    clock=clock,
                    backoff=FullJitter(base_ms=5, cap_ms=80),
                    rng=rng,
                )
                with lock:
                    holding += 1
                    most_held = max(most_held, holding)
                    granted += 1
                time.sleep(rng.uniform(0.001, 0.005))  # "the query"
                with lock:
                    holding -= 1
                store.release("burst-db", grant.token)
        except BaseException as error:  # surfaced by the assertion below
            failures.append(error)

    def checker() -> None:
        nonlocal most_seen_live
        while not done.is_set():
            most_seen_live = max(most_seen_live, store.status("burst-db").in_use)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    watcher = threading.Thread(target=checker)
    for thread in [*threads, watcher]:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()

    assert failures == []
    assert granted == THREADS * ROUNDS
    assert 1 <= most_held <= LIMIT
    assert 1 <= most_seen_live <= LIMIT  # from consistent reads of the item
    status = store.status("burst-db")
    assert (status.in_use, status.remaining, status.expired) == (0, LIMIT, 0)
