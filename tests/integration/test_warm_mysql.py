"""Warm leases against the real MariaDB: the server closes a kept connection that its
environment left idle (as a frozen Lambda environment does) before its lease ends."""

from __future__ import annotations

import time
from typing import Any

import pymysql
import pytest

from connlease.adapters.clock import SystemClock
from connlease.adapters.memory import InMemoryLeaseStore
from connlease.adapters.mysql import MySqlConnector, MySqlEndpoint
from connlease.client import ConnectionLeases
from connlease.domain import Quota
from connlease.domain.warm import KeepWarm
from connlease.local.demo import mysql_from_environment

DB = "orders-mysql"


@pytest.fixture
def mysql() -> MySqlEndpoint:
    return mysql_from_environment()


def connection_id(connection: pymysql.connections.Connection[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (found,) = cursor.fetchone() or (0,)
    return int(found)


def server_has(mysql: MySqlEndpoint, wanted: int) -> bool:
    watcher = MySqlConnector(mysql, None)()
    try:
        with watcher.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (wanted,)
            )
            (count,) = cursor.fetchone() or (0,)
        return int(count) > 0
    finally:
        watcher.close()


def test_a_frozen_environments_connection_is_closed_by_the_server_before_its_lease_ends(
    mysql: MySqlEndpoint,
) -> None:
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, keep_warm=KeepWarm(hold_ms=60_000, idle_close_s=1))
    warm = leases.keep_warm
    assert warm is not None
    with leases.connect(MySqlConnector(mysql, None), ttl_ms=1_000) as connection:
        first = connection_id(connection)
    last_used = time.monotonic()
    assert server_has(mysql, first)

    while server_has(mysql, first) and time.monotonic() < last_used + 5:
        time.sleep(0.05)  # frozen: nothing runs in the environment
    closed_after_ms = (time.monotonic() - last_used) * 1000

    assert not server_has(mysql, first)
    # Within what the lease allows after a last use, so the slot never sees two connections.
    assert closed_after_ms <= warm.after_last_use_ms
    (lease,) = store.status(DB).leases
    assert lease.expires_at_ms > SystemClock().now_ms()

    # Thawed, the environment opens a new connection under the same lease.
    with leases.connect(MySqlConnector(mysql, None), ttl_ms=1_000) as connection:
        second = connection_id(connection)
    assert second != first
    assert store.status(DB).leases == (lease,)
    leases.close()
    assert store.status(DB).in_use == 0
    assert not server_has(mysql, second)
