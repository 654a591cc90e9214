"""`connlease status` and `connlease leases`: reads, and what they cost (a strongly
consistent read of each item: 1 RCU per 4 KB; status of every database scans the table)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.app import (
    Json,
    Where,
    acting,
    answering,
    app,
    out,
    print_json,
)
from cli.render import groups_table, lease_doc, leases_table, status_doc, status_table


@app.command()
@answering
@acting
def status(
    database: Annotated[
        str | None, typer.Argument(help="A quota's database; every one when left out.")
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Limit, in use, remaining, expired, each group's share and the oldest lease."""
    console = where.console()
    store = console.store
    names = [database] if database is not None else list(store.databases())
    statuses = [store.status(name) for name in names]
    now_ms = console.clock.now_ms()
    if as_json:
        documents = [status_doc(found, now_ms) for found in statuses]
        print_json(documents[0] if database is not None else documents)
        return
    if not statuses:
        out.print(
            f"no quotas in table {console.leases_table}"
            " (connlease set DATABASE --limit N --create makes one)"
        )
        return
    out.print(status_table(statuses, now_ms))
    for found in statuses:
        groups = groups_table(found)
        if groups is not None:
            out.print(groups)


@app.command()
@answering
@acting
def leases(
    database: Annotated[str, typer.Argument(help="The quota's database.")],
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Who holds what, since when and until when (never a token a caller could use)."""
    console = where.console()
    found = console.store.status(database)
    now_ms = console.clock.now_ms()
    if as_json:
        print_json(
            {
                "database": found.database,
                "limit": found.limit,
                "in_use": found.in_use,
                "leases": [lease_doc(lease, now_ms) for lease in found.leases],
            }
        )
        return
    out.print(leases_table(found, now_ms))
