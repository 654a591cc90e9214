"""Campaign 4, database faults: MySQL refusing connections or dying mid-query.

Simulated invocations (threads) take a lease through the client library and run a query
through a proxy that refuses connections, cuts them mid-query, or has MariaDB kill them
(local.mysql_faults). Whatever the database does, the lease must come back: the
quota's TTL is long enough that a lease not given back would still be in the item after the
run, so an empty item proves release, not expiry. The original sample's counter runs the
same faults side by side.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from enum import StrEnum
from typing import TypedDict

import pymysql

from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint, server_variable
from benchmarks.strategies import DynamoDBCounter, SampleCounter, Tally
from domain import (
    NoCapacity,
)
from local.mysql_faults import Fault, FaultRates, MySqlFaults
from local.mysql_faults import server_id as faulty_server_id
from local.watch import Poller
from reliability.common import (
    Campaign,
    Checker,
    Figure,
    Lab,
    Outcomes,
    Stopwatch,
    Tracker,
    run_concurrently,
)
from service.client import ConnectionLeases, direct_leases

QUERY_S = 0.05
# Can't connect, lost the connection while connecting, server gone: what a refusal or a
# reset before the greeting looks like to pymysql.
CONNECT_FAILURES = frozenset({2003, 2006, 2013})
# About a third of connections fail: enough of each kind in a short run.
RATES = FaultRates(refused=0.05, reset=0.05, cut=0.1, killed=0.1)
# How long the server may take to let go of a connection whose client is gone: a cut one
# lives until its SLEEP ends.
SETTLE_S = 5.0


class Size(TypedDict):
    invocations: int
    concurrency: int


# The version `make test` runs, well under 30 s: a few dozen of every kind of fault.
SHORT = Size(invocations=300, concurrency=16)


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused at connect"
    CUT = "cut mid-query"
    KILLED = "killed mid-query"
    NO_CAPACITY = "no capacity"
    UNEXPLAINED = "failed without an injected fault"


def run(
    lab: Lab,
    invocations: int = 2000,
    concurrency: int = 16,
    seed: int = 0,
    *,
    limit: int = 8,
    ttl_ms: int = 30_000,
    wait_budget_ms: int = 10_000,
    rates: FaultRates = RATES,
    fault_after_ms: int = 10,
    query_s: float = QUERY_S,
    with_sample: bool = True,
) -> Campaign:
    watch = Stopwatch()
    sql = f"SELECT SLEEP({query_s})"
    database = lab.new_database(limit, ttl_ms)
    leases = Tracker(direct_leases(lab.table, lab.client()))
    with MySqlFaults(lab.mysql, rates, seed=seed, fault_after_ms=fault_after_ms) as proxy:
        connector = MySqlConnector(proxy.endpoint, None)

        outcomes = Outcomes()

        def invoke(n: int) -> None:
            managed = ConnectionLeases(leases, database, rng=random.Random(seed * 1000 + n))
            server_id: int | None = None
            try:
                with managed.connect(
                    connector, wait_budget_ms=wait_budget_ms, ttl_ms=ttl_ms
                ) as connection:
                    server_id = faulty_server_id(connection)
                    with connection.cursor() as cursor:
                        cursor.execute(sql)
                        cursor.fetchall()
            except NoCapacity:
                outcomes.add(Outcome.NO_CAPACITY)
            except DatabaseError as error:  # only the connector raises it
                # 1040 would be the quota failing (too many connections), not the proxy.
                refused = error.code in CONNECT_FAILURES
                outcomes.add(Outcome.REFUSED if refused else Outcome.UNEXPLAINED)
            except pymysql.err.MySQLError:
                outcomes.add(_mid_query(proxy, server_id))
            else:
                outcomes.add(Outcome.OK)

        # Both counted in the checker's baseline, with the proxy's killer connection.
        with _OnServer(lab.mysql, proxy).watching() as on_server:
            checker = Checker(lab.store(), database, lab.mysql)
            with checker.watching():
                run_concurrently(invocations, concurrency, invoke)
            # Less the checker's own connection, closed by now.
            baseline = checker.connections.baseline - 1
            left_on_server, above_baseline = _settle(on_server, proxy, baseline)
    outstanding = lab.store().status(database).leases
    released = set(leases.release_calls)
    campaign = Campaign(
        "Database faults",
        f"{invocations} invocations at concurrency {concurrency}, quota {limit} (TTL "
        f"{ttl_ms / 1000:g} s), each running SELECT SLEEP({query_s}) through a proxy that "
        f"refuses, resets, cuts or has MariaDB kill connections (rates {_rates(rates)}, "
        f"seed {seed}); the lease must always come back.",
    )
    campaign.figures += [
        Figure("invocations", invocations),
        *(Figure(f"outcome: {outcome}", outcomes.counts[outcome]) for outcome in Outcome),
        *_fault_figures(proxy, rates),
        Figure.exactly(
            "failures without an injected fault", outcomes.counts[Outcome.UNEXPLAINED], 0
        ),
        Figure.exactly("leases left in the quota after the run", len(outstanding), 0),
        Figure("leases granted", len(leases.granted)),
        Figure.exactly(
            "leases granted less leases released", len(leases.granted) - len(released), 0
        ),
        Figure.exactly("leases granted but never released", len(leases.granted - released), 0),
        Figure.exactly("leases freed more than once", leases.released_twice, 0),
        # Nothing here fails the store, so a give-back is one call: a second would be the
        # client giving a lease back twice.
        Figure.exactly(
            "leases given back more than once",
            sum(1 for calls in leases.release_calls.values() if calls > 1),
            0,
        ),
        Figure.exactly("releases of leases never granted", len(released - leases.granted), 0),
        # Reported, not held: a cut connection stays on the server until its SLEEP ends,
        # its lease already back (docs/design.md, "When things go wrong").
        Figure(
            f"most campaign connections open on MariaDB at once (by id; quota {limit})",
            on_server.peak,
        ),
        Figure.exactly("campaign connections still open on MariaDB (by id)", left_on_server, 0),
        # At most: a connection some other client had open at the start may have closed.
        Figure.at_most("Threads_connected after the run, less the baseline", above_baseline, 0),
        *checker.figures(),
    ]
    campaign.table.append(_row("connlease", invocations, outcomes.counts, proxy, len(outstanding)))
    if with_sample:
        campaign.table.append(
            _run_sample(
                lab,
                limit=limit,
                invocations=invocations,
                concurrency=concurrency,
                seed=seed,
                rates=rates,
                fault_after_ms=fault_after_ms,
            )
        )
    campaign.seconds = watch.seconds
    return campaign


def _mid_query(proxy: MySqlFaults, server_id: int | None) -> Outcome:
    fault = None if server_id is None else proxy.fault_of(server_id)
    if fault is Fault.CUT:
        return Outcome.CUT
    if fault is Fault.KILLED:
        return Outcome.KILLED
    return Outcome.UNEXPLAINED


class _OnServer(Poller):
    """Samples how many of the campaign's connections MariaDB has open, found by id in
    its PROCESSLIST: unlike Threads_connected, blind to every other client of the server,
    and it still sees a connection the proxy closed but the server has not let go of."""

    def __init__(self, mysql: MySqlEndpoint, proxy: MySqlFaults, interval_s: float = 0.02):
        super().__init__(interval_s, "on-server")
        self._connection = MySqlConnector(mysql, None)()
        self._proxy = proxy
        self._lock = threading.Lock()  # one connection: the poller's and _settle's
        self.peak = 0

    def count(self) -> int:
        with self._lock, self._connection.cursor() as cursor:
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST")
            ids = {int(row[0]) for row in cursor.fetchall()}
        return len(ids & self._proxy.server_ids())

    def threads_connected(self) -> int:
        with self._lock:
            return server_variable(self._connection, "Threads_connected")

    def sample(self) -> None:
        self.peak = max(self.peak, self.count())

    def stopped(self) -> None:
        self._connection.close()


def _settle(on_server: _OnServer, proxy: MySqlFaults, baseline: int) -> tuple[int, int]:
    """Give the server a moment to see closed sockets; then the campaign's connections
    still open on it, and Threads_connected less the checker's baseline."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        left = proxy.open_sessions + on_server.count()
        above = on_server.threads_connected() - baseline
        if (left == 0 and above <= 0) or time.monotonic() > deadline:
            return left, above
        time.sleep(0.05)


def _fault_figures(proxy: MySqlFaults, rates: FaultRates) -> list[Figure]:
    figures = []
    for fault in Fault:
        name = f"faults injected: {fault}"
        if getattr(rates, fault.value):
            figures.append(Figure.at_least(name, proxy.injected[fault], 1))
    figures.append(Figure("faults that found no query to strike", proxy.missed.total()))
    figures.append(Figure("connections through the proxy", proxy.connections))
    return figures


def _rates(rates: FaultRates) -> str:
    return ", ".join(f"{fault} {getattr(rates, fault.value):g}" for fault in Fault)


def _row(
    strategy: str,
    invocations: int,
    outcomes: Counter[str],
    proxy: MySqlFaults,
    outstanding: int,
) -> dict[str, object]:
    return {
        "strategy": strategy,
        "invocations": invocations,
        "ok": outcomes[Outcome.OK],
        "refused at connect": outcomes[Outcome.REFUSED],
        "failed mid-query": outcomes[Outcome.CUT]
        + outcomes[Outcome.KILLED]
        + outcomes[Outcome.UNEXPLAINED],
        "no capacity": outcomes[Outcome.NO_CAPACITY],
        "faults injected": proxy.injected.total(),
        "left outstanding after the run": outstanding,
    }


def _run_sample(
    lab: Lab,
    *,
    limit: int,
    invocations: int,
    concurrency: int,
    seed: int,
    rates: FaultRates,
    fault_after_ms: int,
) -> dict[str, object]:
    """The sample's counter (take before connecting, give back in a finally; fail fast;
    its own SELECT SLEEP(0.02)) against the same faults; what it leaks is its limit less
    its count after the run."""
    counter = DynamoDBCounter(lab.client(), lab.table, limit)
    tally = Tally()
    with MySqlFaults(lab.mysql, rates, seed=seed, fault_after_ms=fault_after_ms) as proxy:
        sample = SampleCounter(counter, MySqlConnector(proxy.endpoint, None), "sample")
        mid_query = Outcomes()

        def invoke(_: int) -> None:
            try:
                sample.invoke(tally)  # it sorts out refusals and connect errors itself
            except pymysql.err.MySQLError:
                mid_query.add(Outcome.UNEXPLAINED)  # the sample lets it through

        run_concurrently(invocations, concurrency, invoke)
    leaked = limit - counter.remaining()
    return {
        "strategy": "sample counter",
        "invocations": invocations,
        "ok": tally.succeeded,
        "refused at connect": tally.db_errors.total(),
        "failed mid-query": mid_query.counts[Outcome.UNEXPLAINED],
        "no capacity": tally.rejected,
        "faults injected": proxy.injected.total(),
        "left outstanding after the run": leaked,
    }
