"""A user's own function, written as the README says: it takes a lease before it connects to
MySQL and gives it back after, and answers 503 when no lease came in time.

Its environment: `QUOTA_DATABASE` (the quota's name), `HELPER_FUNCTION` (leases through the
helper) or `LEASES_TABLE_NAME` (leases from the table in-process), and `DB_HOST`, `DB_PORT`,
`DB_USER`, `DB_PASSWORD`, `DB_NAME`. Run it on the local stack with `make example`.
"""

from __future__ import annotations

import os
from typing import Any

import pymysql

from connlease_client import ConnectionLeases, NoCapacity, direct_leases, lambda_leases

# Built at import time, as a handler module does: no AWS call is made until the first use.
if os.environ.get("HELPER_FUNCTION"):
    leases = ConnectionLeases(
        lambda_leases(os.environ["HELPER_FUNCTION"]), os.environ["QUOTA_DATABASE"]
    )
else:
    leases = ConnectionLeases(
        direct_leases(os.environ["LEASES_TABLE_NAME"]), os.environ["QUOTA_DATABASE"]
    )


def open_mysql_connection() -> pymysql.Connection[Any]:
    return pymysql.connect(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        user=os.environ.get("DB_USER", "root"),
        password=os.environ.get("DB_PASSWORD", ""),
        database=os.environ.get("DB_NAME", "test"),
        connect_timeout=5,
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """`{"hold_s": 0.2}`: hold the connection that long, 0-5 s (the query's stand-in)."""
    hold_s = event.get("hold_s", 0.1) if isinstance(event, dict) else None
    if isinstance(hold_s, bool) or not isinstance(hold_s, int | float) or not 0 <= hold_s <= 5:
        return {"statusCode": 400, "error": "hold_s must be a number of seconds from 0 to 5"}
    try:
        with leases.connect(open_mysql_connection, context=context) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID(), SLEEP(%s)", (hold_s,))
                (connection_id, _) = cursor.fetchone()
            return {
                "statusCode": 200,
                "connection_id": connection_id,
                "lease_wait_ms": leases.last_wait_ms,
            }
    except NoCapacity:
        return {"statusCode": 503, "error": "no database connection free; try again"}
