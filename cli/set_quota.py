"""`connlease set`: change a quota (its limit, default TTL and groups) in place, without a
redeploy; live leases are kept, and a quota lowered below them drains as they end."""

from __future__ import annotations

import re
from contextlib import closing
from typing import Annotated

import typer
from rich.console import Console as Terminal

from adapters.mysql import MySqlConnector, server_variable
from cli.app import (
    BAD_USAGE,
    CliError,
    Json,
    MysqlOptions,
    Where,
    acting,
    answering,
    app,
    confirm,
    err,
    on_mysql,
    out,
    print_json,
)
from cli.render import groups_table, span, status_doc, status_table
from domain import CorruptQuota, LeaseStore, Quota, QuotaStatus, UnknownDatabase
from domain.groups import (
    Groups,
    Reservation,
    check_reserved_within,
    format_reservations,
    parse_reservations,
)
from domain.model import MAX_LIMIT, check_limit, check_ttl_ms, limit_of_percent

# A new quota's default lease TTL, as the template's DefaultLeaseTtlMs.
NEW_QUOTA_TTL_MS = 60_000
_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h)?", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1}


def parse_duration_ms(text: str, option: str) -> int:
    """`900`, `900ms`, `30s`, `5m`, `1h`: milliseconds."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise CliError(f"{option} {text!r}: write milliseconds or 30s, 5m, 1h", BAD_USAGE)
    return check_ttl_ms(int(found.group(1)) * _UNIT_MS[found.group(2)], option.lstrip("-"))


@app.command("set")
@answering
@acting
@on_mysql
def set_quota(
    database: Annotated[str, typer.Argument(help="The quota's database (created if new).")],
    limit: Annotated[int | None, typer.Option(metavar="N", help="Leases allowed at once.")] = None,
    percent: Annotated[
        int | None,
        typer.Option(metavar="P", help="Limit as this percent of MySQL's max_connections (1-100)."),
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Default lease TTL: milliseconds, or 30s, 5m, 1h."),
    ] = None,
    reserve: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GROUP=N[:OPTIONS]",
            help="A group's reservation, GROUP=N[:max=M][:borrow|:noborrow];"
            " once per group. The groups given replace the quota's.",
        ),
    ] = None,
    no_groups: Annotated[
        bool, typer.Option("--no-groups", help="Remove every group's reservation.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing.")] = False,
    as_json: Json = False,
    *,
    where: Where,
    mysql: MysqlOptions,
) -> None:
    """Set a quota's limit (--limit N, or --percent P of MySQL's max_connections), its
    default TTL and its groups; asks first unless --yes."""
    # Everything the command line alone can check, before any call.
    if (limit is None) == (percent is None):
        raise CliError("give one of --limit N or --percent P", BAD_USAGE)
    if limit is not None:
        check_limit(limit)
    if percent is not None and not 1 <= percent <= 100:
        raise CliError(f"--percent {percent}: must be between 1 and 100", BAD_USAGE)
    ttl_ms = None if ttl is None else parse_duration_ms(ttl, "--ttl")
    groups = _groups(reserve, no_groups)
    console = where.console()
    if percent is not None:
        limit = _percent_of_max_connections(
            mysql.connector(console), percent, err if as_json else out
        )
    assert limit is not None
    before = _current(console.store, database, err if as_json else out)
    quota = Quota(limit, ttl_ms or (before.default_ttl_ms if before else NEW_QUOTA_TTL_MS))
    if groups:
        Groups().replaced(groups, limit)  # above the limit: said now, nothing written
    elif groups is None and before is not None and before.groups is not None:
        check_reserved_within(before.groups.reserved, limit)  # kept groups must still fit
    say = err if as_json else out  # stdout is the JSON document's alone
    for line in _plan(database, before, quota, groups):
        say.print(line)
    if not yes:
        confirm("Apply?", "not changed")
    after = console.store.set_quota(database, quota, groups)
    if as_json:
        print_json(status_doc(after, console.clock.now_ms()))
        return
    out.print(status_table([after], console.clock.now_ms()))
    shown = groups_table(after)
    if shown is not None:
        out.print(shown)


def _current(store: LeaseStore, database: str, say: Terminal) -> QuotaStatus | None:
    """The quota as it is; None for a new one, or one whose item set_quota will rewrite."""
    try:
        return store.status(database)
    except UnknownDatabase:
        return None
    except CorruptQuota as error:
        say.print(f"{database}: its quota item is unreadable ({error.problem}); set rewrites it")
        return None


def _groups(reserve: list[str] | None, no_groups: bool) -> tuple[Reservation, ...] | None:
    """The groups to set: None keeps the quota's, () removes them."""
    if reserve and no_groups:
        raise CliError("give --reserve or --no-groups, not both", BAD_USAGE)
    if no_groups:
        return ()
    if not reserve:
        return None
    groups = parse_reservations(",".join(reserve))
    Groups().replaced(groups, MAX_LIMIT)  # names, numbers, duplicates; the limit later
    return groups


def _percent_of_max_connections(connect: MySqlConnector, percent: int, say: Terminal) -> int:
    with closing(connect()) as connection:
        max_connections = server_variable(connection, "max_connections")
    limit = limit_of_percent(max_connections, percent)
    say.print(
        f"MySQL {connect.describe()}: max_connections {max_connections};"
        f" {percent}% of it is a limit of {limit}"
    )
    return limit


def _plan(
    database: str,
    before: QuotaStatus | None,
    quota: Quota,
    groups: tuple[Reservation, ...] | None,
) -> list[str]:
    """What the change does, said before it is made."""
    if before is None:
        lines = [f"{database}: a new quota of {quota.limit}, leases {span(quota.default_ttl_ms)}"]
    else:
        lines = [
            f"{database}: limit {before.limit} -> {quota.limit},"
            f" default TTL {span(before.default_ttl_ms)} -> {span(quota.default_ttl_ms)};"
            f" {before.in_use} in use now"
        ]
        if before.in_use > quota.limit:
            lines.append(
                f"  the quota will drain: {before.in_use} leases are held and the new limit is"
                f" {quota.limit}; none is taken away, and no new lease is granted until fewer"
                f" than {quota.limit} are held"
            )
    if groups is not None:
        lines.append(f"  groups: {format_reservations(groups) or 'none'}")
    return lines
