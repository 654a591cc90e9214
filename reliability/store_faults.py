"""Campaign 3, store faults: invocations take and give back leases through a proxy that
throttles, answers 500, times out and drops answers after applying the write.

Held to: never more leases held than the limit; every lease a caller got is given back, or
its give-back spent its whole budget (retried safely, never freeing another's); every caller
that got nothing gets a typed error, and only once its budget is spent (how late: its last
attempt and that attempt's give-back).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from adapters.aws import SDK_CONFIG
from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import DatabaseError, MySqlConnector
from domain import (
    ConnleaseError,
    DecorrelatedJitter,
    Leases,
    NoCapacity,
    StoreUnavailable,
)
from domain.model import SKEW_MARGIN_MS
from domain.shards import SHARD_MARK, shard_lease_id
from local.context import LocalContext
from local.dynamodb import local_client
from local.faults import Fault, FaultRates, FaultyDynamoDB
from reliability.common import (
    Campaign,
    Checker,
    Figure,
    Lab,
    LeasesProxy,
    Outcomes,
    Stopwatch,
    Tracker,
    run_concurrently,
)
from service.client import RELEASE_BUDGET_MS, ConnectionLeases

# The helper's SDK settings (standard retries, 3 attempts) with the read timeout cut from 5 s
# to 1 s, so that a timeout costs the campaign seconds, not minutes.
CLIENT_CONFIG = SDK_CONFIG.merge(Config(connect_timeout=1, read_timeout=1, max_pool_connections=64))
HANG_S = 1.5  # past the read timeout
# Milliseconds the budget is rounded to, either way.
EARLY_TOLERANCE_MS = 5
DEFAULT_RATES = FaultRates(throttle=0.05, server_error=0.05, timeout=0.02, drop_after_apply=0.05)


@dataclass(frozen=True)
class Plan:
    invocations: int = 2_000
    concurrency: int = 12
    limit: int = 5
    ttl_ms: int = 30_000
    # Each invocation's timeout: it waits for a lease until 1 s before it (the client's
    # margin), and its lease ends with it.
    timeout_s: float = 12.0
    rates: FaultRates = DEFAULT_RATES
    outage_invocations: int = 24
    outage_timeout_s: float = 2.0
    seed: int = 0


SHORT = Plan(invocations=150, concurrency=8, outage_invocations=8)


class Environments(LeasesProxy):
    """Execution environments, one a thread (run_concurrently), each with its own SDK client,
    as Lambda gives each its own: a shared client's retry quota, drained by one caller's
    faults, would leave the others' faults unretried. Each knows its invocation's time; a
    call goes to the calling thread's environment."""

    def __init__(self, make: Callable[[], Leases]) -> None:
        self._make = make
        self._local = threading.local()

    def _leases(self) -> Leases:
        if not hasattr(self._local, "store"):
            self._local.store = self._make()
        store: Leases = self._local.store
        return store

    def serving(self, context: LocalContext) -> None:
        self._local.context = context

    def time_left(self) -> int | None:
        context = getattr(self._local, "context", None)
        return None if context is None else int(context.get_remaining_time_in_millis())


def invoke(
    leases: ConnectionLeases,
    connector: MySqlConnector,
    timeout_s: float,
    outcomes: Outcomes,
    environments: Environments,
) -> None:
    context = LocalContext("store-faults", timeout_s=timeout_s)
    environments.serving(context)
    # The instant the client stops waiting: when its lease, which ends the skew margin
    # before the invocation's deadline, would leave less than its safety margin to use.
    usable_ms = context.get_remaining_time_in_millis() - SKEW_MARGIN_MS - leases.safety_margin_ms
    gives_up_at = time.monotonic() + usable_ms / 1000
    try:
        with (
            leases.connect(connector, context=context) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT SLEEP(0.005)")
            cursor.fetchall()
    except (NoCapacity, StoreUnavailable) as error:
        outcomes.add(type(error).__name__, round((time.monotonic() - gives_up_at) * 1000))
    except DatabaseError as error:
        outcomes.add(f"MySQL error {error.code}")
    except ConnleaseError as error:
        outcomes.add(type(error).__name__)
    except Exception as error:
        outcomes.add(f"untyped {type(error).__name__}")
    else:
        outcomes.add("ok")


def lease_id_written(write: dict[str, Any]) -> str:
    """The id callers know a lease by, from the write that made it: in a split quota's
    shard (`database#i`) the entry's key is the lease's key in that shard."""
    key = write["ExpressionAttributeNames"]["#id"]
    item = write["Key"]["pk"]["S"]
    if SHARD_MARK in item:
        return shard_lease_id(int(item.rpartition(SHARD_MARK)[2]), key)
    return str(key)


def run(lab: Lab, plan: Plan = Plan()) -> Campaign:
    watch = Stopwatch()
    database = lab.new_database(plan.limit, plan.ttl_ms)
    connector = MySqlConnector(lab.mysql, None)
    checker = Checker(lab.store(), database, lab.mysql)
    with (
        lab.throttling() as throttled,
        FaultyDynamoDB(
            lab.dynamodb.endpoint_url, plan.rates, seed=plan.seed, hang_s=HANG_S
        ) as proxy,
    ):
        environments = Environments(
            lambda: DynamoDBLeaseStore(
                local_client(proxy.endpoint_url, CLIENT_CONFIG), lab.table, SystemClock()
            )
        )
        tracker = Tracker(environments, time_left=environments.time_left)

        def make_leases(n: int) -> ConnectionLeases:
            return ConnectionLeases(
                tracker,
                database,
                backoff=DecorrelatedJitter(base_ms=20, cap_ms=500),
                rng=random.Random(plan.seed * 1_000_003 + n),
            )

        faulty = Outcomes()
        with checker.watching():
            run_concurrently(
                plan.invocations,
                plan.concurrency,
                lambda n: invoke(make_leases(n), connector, plan.timeout_s, faulty, environments),
            )
            injected = Counter(proxy.injected)
            # A store that answers nothing at all: every caller must get a typed error.
            proxy.set_rates(FaultRates(server_error=1.0))
            outage = Outcomes()
            run_concurrently(
                plan.outage_invocations,
                plan.concurrency,
                lambda n: invoke(
                    make_leases(n), connector, plan.outage_timeout_s, outage, environments
                ),
            )
            proxy.set_rates(FaultRates())
            time.sleep(HANG_S + 0.5)  # let held requests land before the final look
            unseen = Counter(proxy.applied_unseen)
            late_acquires = {
                lease_id_written(write)
                for write in proxy.late_writes
                # A grant (and only a grant) sets its entry's fence.
                if "fences.#id = " in write.get("UpdateExpression", "")
            }
        left = lab.store().status(database).leases
    left_ids = {lease.id for lease in left}
    lost = tracker.lost_releases
    # A give-back is retried until its budget is spent or its lease ends (the client's
    # contract, service.client.ConnectionLeases); one that spent either ends at its TTL.
    spent = {
        lease
        for lease in lost
        if tracker.tried_at_failure_ms.get(lease, 0) >= RELEASE_BUDGET_MS - EARLY_TOLERANCE_MS
        or (
            (ended := tracker.left_at_failure_ms.get(lease)) is not None
            and ended <= SKEW_MARGIN_MS + EARLY_TOLERANCE_MS
        )
    }
    granted_left = left_ids & tracker.granted
    # Signed: an error before the budget was spent would show as a negative figure.
    overshoots = faulty.overshoot_ms + outage.overshoot_ms
    untyped = sum(n for kind, n in (faulty.counts + outage.counts).items() if "untyped" in kind)
    campaign = Campaign(
        "Store faults",
        f"{plan.invocations} invocations ({plan.concurrency} at a time, quota {plan.limit}) "
        "each take a lease, connect to MariaDB, run `SELECT SLEEP(0.005)`, disconnect and "
        "give the lease back, through a proxy in front of the embedded DynamoDB that meets "
        f"{plan.rates.total:.0%} of data-plane requests with a fault: "
        f"throttle {plan.rates.throttle:.0%}, 500 {plan.rates.server_error:.0%}, "
        f"timeout {plan.rates.timeout:.0%} (held {HANG_S} s, past the client's 1 s read "
        f"timeout, then applied), drop after apply {plan.rates.drop_after_apply:.0%}. "
        "SDK: standard retries, 3 attempts. Each invocation has a "
        f"{plan.timeout_s:g} s timeout: it waits for a lease until 1 s before it, and its "
        "lease ends with it. Then "
        f"{plan.outage_invocations} invocations with a {plan.outage_timeout_s:g} s timeout "
        "against a store that answers every request with a 500. An acquire that timed out "
        "and lands after its retry succeeded and the lease was given back makes the lease "
        "again: it holds its slot until the invocation's end (docs/design.md, \"A write "
        'lands late"), which is why some invocations get no lease in time.' + throttled,
    )
    campaign.figures += [
        Figure("faults injected", sum(injected.values())),
        *(Figure(f"  {fault.value}", injected[fault]) for fault in Fault),
        Figure("writes applied whose answer was lost (timeout, drop)", sum(unseen.values())),
        Figure("  of them, timed out and applied late", unseen[Fault.TIMEOUT]),
        Figure("requests that reached the table", proxy.forwarded),
        Figure("answers the client had stopped waiting for (its own timeout)", proxy.abandoned),
        Figure("invocations that ran their query", faulty.counts["ok"]),
        Figure("  got NoCapacity (typed)", faulty.counts["NoCapacity"]),
        Figure("  got StoreUnavailable (typed)", faulty.counts["StoreUnavailable"]),
        Figure.exactly("untyped errors to a caller", untyped, 0),
        Figure.at_most("most leases held at once (in-process)", tracker.most_held, plan.limit),
        *checker.figures(),
        Figure("leases granted to callers", len(tracker.granted)),
        Figure("give-backs retried after a fault", len(tracker.failed_releases)),
        Figure("releases lost (granted, never confirmed given back)", len(lost)),
        Figure.exactly(
            "  of them, given up before the give-back's budget was spent",
            len(lost - spent),
            0,
        ),
        # A give-back that fails for a whole budget under these rates is rare; a failure
        # that does not pass (a hot key, a request the store always refuses) would lose
        # far more than this.
        Figure.at_most(
            "  of them, after the whole budget (end at their TTL)",
            len(spent),
            max(1, len(tracker.granted) // 100),
        ),
        Figure(
            "  each's time tried / time the invocation had left at its last failure, ms",
            ", ".join(
                f"{tracker.tried_at_failure_ms.get(lease)}/{tracker.left_at_failure_ms.get(lease)}"
                for lease in sorted(lost)
            )
            or "none lost",
        ),
        Figure(
            "granted leases back in the table after their release (a late write re-made them)",
            len(granted_left),
        ),
        Figure.exactly(
            "  not re-made by an acquire that timed out and landed late, nor left by a"
            " give-back that spent its budget",
            len(granted_left - late_acquires - spent),
            0,
        ),
        Figure.exactly("releases that freed a lease twice", tracker.released_twice, 0),
        Figure(
            "entries left by acquires that failed (expire at their TTL)",
            len(left_ids - tracker.granted),
        ),
        Figure("most time past the wait budget before the error, ms", max(overshoots, default=0)),
        Figure.at_least(
            "least time past the wait budget before the error, ms (both phases)",
            min(overshoots, default=0),
            -EARLY_TOLERANCE_MS,
        ),
        Figure.exactly(
            "outage: invocations without a typed StoreUnavailable",
            plan.outage_invocations - outage.counts["StoreUnavailable"],
            0,
        ),
        Figure(
            "outage: most time past the budget before the error, ms",
            max(outage.overshoot_ms, default=0),
        ),
    ]
    campaign.table = [
        {"phase": "faults", "outcome": kind, "invocations": n}
        for kind, n in sorted(faulty.counts.items())
    ] + [
        {"phase": "outage", "outcome": kind, "invocations": n}
        for kind, n in sorted(outage.counts.items())
    ]
    campaign.seconds = watch.seconds
    return campaign
