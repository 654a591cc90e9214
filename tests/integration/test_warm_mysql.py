"""Warm leases against the real MariaDB: the server closes a kept connection that its
environment left idle (as a frozen Lambda environment does) before its lease ends."""

from __future__ import annotations

import time
from typing import Any

import pymysql
import pytest

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from adapters.mysql import MySqlConnector, MySqlEndpoint
from domain import Quota
from domain.warm import KeepWarm
from local.demo_setup import mysql_from_environment
from service.client import ConnectionLeases

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
    leases = ConnectionLeases(store, DB, keep_warm=KeepWarm(hold_ms=100, idle_close_s=1))
    warm = leases.keep_warm
    assert warm is not None
    with leases.connect(MySqlConnector(mysql, None), ttl_ms=1_000) as connection:
        first = connection_id(connection)
        last_used_ms = SystemClock().now_ms()  # the connection's last statement
    (lease,) = store.status(DB).leases
    assert server_has(mysql, first)

    while server_has(mysql, first) and SystemClock().now_ms() < last_used_ms + 5_000:
        time.sleep(0.05)  # frozen: nothing runs in the environment
    closed_at_ms = SystemClock().now_ms()

    assert not server_has(mysql, first)
    # The server closed it before the lease ended: its slot never saw two connections.
    assert closed_at_ms < lease.expires_at_ms
    assert closed_at_ms - last_used_ms <= warm.after_last_use_ms

    # Thawed past its hold with nobody waiting, the environment renews its lease and opens
    # a new connection under it.
    with leases.connect(MySqlConnector(mysql, None), ttl_ms=1_000) as connection:
        second = connection_id(connection)
    assert second != first
    assert [kept.id for kept in store.status(DB).leases] == [lease.id]
    leases.close()
    assert store.status(DB).in_use == 0
    assert not server_has(mysql, second)
