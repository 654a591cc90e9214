"""What the lease's bound costs each statement (docs/design.md, "Connections bounded by their
lease"): every statement on a leased pymysql connection carries a `SET` of the session's
bounds in its own socket write. `SELECT 1` in a loop on a bare connection and on one held
under a lease as `ConnectionLeases.connect` holds it, alternated round by round in one run,
so that the machine's load falls on both alike.

`python -m benchmarks.statement_cost` prints a short run against MariaDB on 127.0.0.1:3306
(DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME as for the demo).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from adapters.mysql import MySqlConnector, MySqlEndpoint
from domain import Quota
from local.demo_setup import mysql_from_environment
from service.client import ConnectionLeases

DATABASE = "statement-cost-db"
LEASE_MS = 600_000  # outlasts any run: the bound, not the lease's end, is measured
QUERY_MS = 20  # the burst's query, to put the cost beside


@dataclass(frozen=True)
class Plan:
    rounds: int
    statements: int  # per connection per round


FULL = Plan(rounds=20, statements=2_000)
QUICK = Plan(rounds=6, statements=500)


@dataclass(frozen=True)
class StatementCost:
    bare_us: list[float]  # per round, µs a statement
    bound_us: list[float]
    statements: int

    @property
    def bare(self) -> float:
        return statistics.median(self.bare_us)

    @property
    def bound(self) -> float:
        return statistics.median(self.bound_us)

    # Both from the two medians, so that the doc's three figures agree with each other.
    @property
    def added(self) -> float:
        return self.bound - self.bare

    @property
    def ratio(self) -> float:
        return self.bound / self.bare

    def figures(self) -> dict[str, str]:
        return {
            "statement.bare_us": f"{self.bare:.0f}",
            "statement.bound_us": f"{self.bound:.0f}",
            "statement.added_us": f"{self.added:.0f}",
            "statement.ratio": f"{self.ratio:.2f}x",
            "statement.added_share_20ms": f"{100 * self.added / (QUERY_MS * 1000):.2f}%",
        }

    def lines(self) -> list[str]:
        return [
            "## The per-statement bound",
            "",
            "`SELECT 1` in a loop on loopback, on a bare pymysql connection and on one held "
            "under a lease (`ConnectionLeases.connect`: a `SET` of the session's bounds in "
            f"each statement's own write), {self.statements:,} statements each, alternated "
            f"over {len(self.bare_us)} rounds (`benchmarks/statement_cost.py`); medians of "
            "the rounds:",
            "",
            "| connection | µs a statement |",
            "|---|---:|",
            f"| bare | {self.bare:.0f} |",
            f"| under a lease | {self.bound:.0f} |",
            "",
            f"The bound adds {self.added:.0f} µs a statement ({self.ratio:.2f}x a bare "
            f"`SELECT 1`), {100 * self.added / (QUERY_MS * 1000):.2f}% of a {QUERY_MS} ms "
            "query.",
            "",
        ]


def per_statement_us(connection: Any, statements: int) -> float:
    with connection.cursor() as cursor:
        started = time.perf_counter()
        for _ in range(statements):
            cursor.execute("SELECT 1")
            cursor.fetchall()
        return (time.perf_counter() - started) / statements * 1e6


def max_statement_time(connection: Any) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@max_statement_time")
        row = cursor.fetchone()
    return float(row[0]) if row else 0.0


def run(mysql: MySqlEndpoint, plan: Plan = QUICK) -> StatementCost:
    connect = MySqlConnector(mysql, None)
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota(DATABASE, Quota(limit=1, default_ttl_ms=LEASE_MS))
    bare = connect()
    bare_us: list[float] = []
    bound_us: list[float] = []
    try:
        with ConnectionLeases(store, DATABASE).connect(connect, ttl_ms=LEASE_MS) as bound:
            # The comparison means something only if the one is bounded and the other not.
            if max_statement_time(bound) <= 0 or max_statement_time(bare) != 0:
                raise RuntimeError("the leased connection is not bounded, or the bare one is")
            for round_ in range(plan.rounds):
                # Each goes first in every other round: neither always meets a warmer cache.
                if round_ % 2:
                    bound_us.append(per_statement_us(bound, plan.statements))
                    bare_us.append(per_statement_us(bare, plan.statements))
                else:
                    bare_us.append(per_statement_us(bare, plan.statements))
                    bound_us.append(per_statement_us(bound, plan.statements))
    finally:
        bare.close()
    return StatementCost(bare_us, bound_us, plan.statements)


if __name__ == "__main__":
    print("\n".join(run(mysql_from_environment()).lines()))
