"""`connlease reconcile`: a quota's live leases beside MySQL's own count of the application
user's connections (information_schema.PROCESSLIST), the drift between the two and the
connections that no live lease explains.

A holder takes its lease before it connects and releases it after it disconnects, so the
application user's connections should never outnumber the live leases. One beyond them
is a holder that kept its connection past its lease, a function that connects without
connlease, or someone's session as that user: the quota no longer bounds the server."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table as Grid

from adapters.mysql import ServerConnection, connections_by_user, connections_of
from adapters.secrets import SecretCredentials
from cli.app import (
    BAD_USAGE,
    REFUSED,
    CliError,
    Json,
    MysqlOptions,
    Where,
    acting,
    answering,
    app,
    on_mysql,
    out,
    print_json,
)
from domain import QuotaStatus
from service.bootstrap import Console

# The template's AppUserSecret names this user; the default without a stack or --local,
# when it has connections.
DEFAULT_APP_USER = "connlease_app"
SHOWN = 10  # unexplained connections listed, the oldest first


@dataclass(frozen=True)
class Reconciliation:
    database: str
    limit: int
    live_leases: int
    expired_leases: int
    app_user: str
    connections: int  # the application user's
    oldest: tuple[ServerConnection, ...]  # the application user's, the oldest first
    by_user: dict[str, int]  # every user's, the querying connection left out
    mysql: str

    @property
    def drift(self) -> int:
        return self.connections - self.live_leases

    @property
    def unexplained(self) -> int:
        return max(0, self.drift)

    def document(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "app_user": self.app_user,
            "limit": self.limit,
            "live_leases": self.live_leases,
            "expired_leases": self.expired_leases,
            "connections": self.connections,
            "drift": self.drift,
            "unexplained": self.unexplained,
            "oldest_unexplained": [
                {
                    "id": found.id,
                    "host": found.host,
                    "seconds": found.seconds,
                    "command": found.command,
                }
                for found in self.oldest[: min(self.unexplained, SHOWN)]
            ],
            "connections_by_user": self.by_user,
            "mysql": self.mysql,
        }


@app.command()
@answering
@acting
@on_mysql
def reconcile(
    database: Annotated[str, typer.Argument(help="The quota's database.")],
    app_user: Annotated[
        str | None,
        typer.Option(
            "--app-user",
            help="The MySQL user whose connections the quota governs (default: the user in"
            " the stack's AppUserSecretArn secret; with --local, the user the local stack's"
            " functions log in as, DB_USER or root; else"
            f" {DEFAULT_APP_USER} when it has connections).",
        ),
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
    mysql: MysqlOptions,
) -> None:
    """The quota's live leases beside MySQL's count of the application user's connections
    (information_schema.PROCESSLIST), the drift, every user's connections, and the
    connections no live lease explains. The MySQL login needs PROCESS to see other
    users' connections (the master user has it). With --local, MySQL and the
    application user are the local stack's (127.0.0.1:3306, root; DB_HOST, DB_USER and
    the other DB_* variables say otherwise, as they do for `make local`).

    Exit status: 0 when no connection is unexplained (connections <= live leases), 1 when
    some are (for a cron job's alert) or on an error, 2 on bad usage."""
    console = where.console()
    before = console.store.status(database)  # an unknown quota: said before MySQL is asked
    before_ms = console.clock.now_ms()
    user = app_user or _stack_app_user(console)
    if user is None and where.local:
        # The local stack's functions log in as DB_USER (root), as this command does.
        user = mysql.login_user
    connect = mysql.connector(console, local=where.local)
    with closing(connect()) as connection:
        by_user = connections_by_user(connection)
        if user is None:
            if DEFAULT_APP_USER not in by_user:
                raise CliError(
                    "say whose connections the quota governs: --app-user NAME"
                    f" ({DEFAULT_APP_USER} has none, and no --stack names its secret"
                    " nor --local its user)",
                    BAD_USAGE,
                )
            user = DEFAULT_APP_USER
        oldest = connections_of(connection, user)
    after = console.store.status(database)
    # Leases read on both sides of the process list: a connection listed there was opened
    # after its lease was granted and is closed before it is released, so its lease was
    # live at one reading or the other, unless it began and ended between the two.
    live = _live(before, before_ms) | _live(after, console.clock.now_ms())
    found = Reconciliation(
        database=database,
        limit=after.limit,
        live_leases=len(live),
        expired_leases=sum(1 for lease in after.leases if lease.id not in live),
        app_user=user,
        connections=by_user.get(user, 0),
        oldest=tuple(oldest),
        by_user=by_user,
        mysql=connect.describe(),
    )
    if as_json:
        print_json(found.document())
    else:
        _show(found)
    if found.unexplained:
        raise typer.Exit(REFUSED)


def _stack_app_user(console: Console) -> str | None:
    secret = console.outputs.get("AppUserSecretArn")
    if not secret:
        return None
    return SecretCredentials(console.aws.client("secretsmanager"), secret).current().username


def _live(status: QuotaStatus, now_ms: int) -> set[str]:
    return {lease.id for lease in status.leases if lease.is_live(now_ms)}


def _show(found: Reconciliation) -> None:
    counts = Grid(
        title=f"{found.database}: leases and {found.app_user}'s connections",
        title_justify="left",
    )
    counts.add_column("")
    counts.add_column("count", justify="right")
    counts.add_row(f"live leases (limit {found.limit})", str(found.live_leases))
    counts.add_row("expired lease entries", str(found.expired_leases))
    counts.add_row(f"connections of {found.app_user}", str(found.connections))
    drift = f"+{found.drift}" if found.drift > 0 else str(found.drift)
    counts.add_row("drift (connections - live leases)", drift)
    out.print(counts)
    users = Grid(title=f"connections by user ({found.mysql})", title_justify="left")
    users.add_column("user")
    users.add_column("connections", justify="right")
    for name, count in found.by_user.items():
        users.add_row(name + (" (the quota's)" if name == found.app_user else ""), str(count))
    if not found.by_user:
        users.add_row("(none but this one)", "0")
    out.print(users)
    if found.unexplained:
        shown = found.oldest[: min(found.unexplained, SHOWN)]
        out.print(
            f"{found.unexplained} connection(s) no live lease explains; the oldest"
            f" {len(shown)} of {found.app_user}'s:"
        )
        oldest = Grid()
        for column in ("id", "host", "seconds", "command"):
            oldest.add_column(column, justify="right" if column in ("id", "seconds") else "left")
        for connection in shown:
            oldest.add_row(
                str(connection.id), connection.host, str(connection.seconds), connection.command
            )
        out.print(oldest)
        out.print(
            "Each is a holder that kept its connection past its lease (expired or"
            " force-released), a function connecting without connlease, or an operator's"
            f" session as {found.app_user}. Seconds are in the connection's current command:"
            " for an idle one, since its last statement."
        )
    elif found.drift < 0:
        out.print(
            f"{-found.drift} live lease(s) without a connection: normal and harmless, a"
            " holder between its acquire and its connect, or between its disconnect and its"
            " release."
        )
    else:
        out.print("every connection has a live lease")
