"""`connlease set`: change a quota (its limit, default TTL and groups) in place, without a
redeploy; live leases are kept, and a quota lowered below them drains as they end. What
is not given is kept. A database without a quota is refused unless --create: a name
mistyped must not become a second quota that no function uses."""

from __future__ import annotations

import re
from contextlib import closing
from typing import Annotated

import typer
from rich.console import Console as Terminal

from adapters.mysql import MySqlConnector, server_variable
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
    confirm,
    err,
    on_mysql,
    out,
    print_json,
)
from cli.render import groups_table, span, status_doc, status_table
from domain import CorruptQuota, InvalidInput, LeaseStore, Quota, QuotaStatus, UnknownDatabase
from domain.groups import (
    Groups,
    Reservation,
    format_reservations,
    parse_reservations,
)
from domain.model import MAX_LIMIT, MAX_TTL_MS, MIN_TTL_MS, limit_of_percent

# A new quota's default lease TTL, as the template's DefaultLeaseTtlMs.
NEW_QUOTA_TTL_MS = 60_000
_DURATION = re.compile(r"([0-9]{1,9})(ms|s|sec|m|min|h)?", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def parse_duration_ms(text: str, option: str) -> int:
    """`900` (milliseconds), `900ms`, `30s`, `5m` or `5min`, `1h`: milliseconds, between
    the shortest and the longest lease TTL."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise CliError(
            f"{option}: {text!r} is no duration; write 900ms, 30s, 5m or 1h"
            " (a bare number is milliseconds)",
            BAD_USAGE,
        )
    ms = int(found.group(1)) * _UNIT_MS[found.group(2) or "ms"]
    if ms < MIN_TTL_MS:
        raise CliError(
            f"{option}: must be at least {duration(MIN_TTL_MS)}, got {duration(ms)}", BAD_USAGE
        )
    if ms > MAX_TTL_MS:
        raise CliError(
            f"{option}: must be at most {duration(MAX_TTL_MS)}, got {duration(ms)}", BAD_USAGE
        )
    return ms


def duration(ms: int) -> str:
    """Milliseconds exactly, in the largest unit `--ttl` takes that divides them."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def check_limit_option(limit: int, option: str = "--limit") -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise CliError(f"{option}: must be from 1 to {MAX_LIMIT} leases, got {limit}", BAD_USAGE)
    return limit


@app.command("set")
@answering
@acting
@on_mysql
def set_quota(
    database: Annotated[
        str, typer.Argument(help="The quota's database (one that has none: with --create).")
    ],
    limit: Annotated[int | None, typer.Option(metavar="N", help="Leases allowed at once.")] = None,
    percent: Annotated[
        int | None,
        typer.Option(metavar="P", help="Limit as this percent of MySQL's max_connections (1-100)."),
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Default lease TTL: 900ms, 30s, 5m, 1h (a bare number is milliseconds).",
        ),
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
    create: Annotated[
        bool,
        typer.Option(
            "--create",
            help="Make a new quota (with --limit or --percent) when the database has none;"
            " without it, set refuses a database that has no quota.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing.")] = False,
    as_json: Json = False,
    *,
    where: Where,
    mysql: MysqlOptions,
) -> None:
    """Change a quota: its limit (--limit N, or --percent P of MySQL's max_connections),
    its default TTL (--ttl) and its groups (--reserve, --no-groups); what is not given is
    kept. A new quota needs --create. Asks first unless --yes."""
    ttl_ms, groups = _checked(limit, percent, ttl, reserve, no_groups, create)
    say = err if as_json else out  # stdout is the JSON document's alone
    console = where.console()
    before, exists = _current(console.store, database, say)
    if not exists and not create:
        raise CliError(
            f"no quota for database {database!r}: --create makes one (with --limit N or"
            " --percent P); connlease status lists the quotas there are",
            REFUSED,
        )
    if percent is not None:
        limit = _percent_of_max_connections(
            mysql.connector(console, local=where.local), percent, say
        )
    if limit is None:
        if before is None:  # an item set_quota must rewrite whole
            raise CliError(
                f"{database}: its quota item is unreadable; give --limit N or --percent P"
                " to rewrite it",
                REFUSED,
            )
        limit = before.limit
    quota = Quota(limit, ttl_ms or (before.default_ttl_ms if before else NEW_QUOTA_TTL_MS))
    _check_groups_fit(groups, before, limit, "--limit" if percent is None else "--percent")
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


def _checked(
    limit: int | None,
    percent: int | None,
    ttl: str | None,
    reserve: list[str] | None,
    no_groups: bool,
    create: bool,
) -> tuple[int | None, tuple[Reservation, ...] | None]:
    """Everything the command line alone can check, before any call: the TTL and the
    groups to set (None: the quota's are kept)."""
    if limit is not None and percent is not None:
        raise CliError("give --limit N or --percent P, not both", BAD_USAGE)
    if limit is not None:
        check_limit_option(limit)
    if percent is not None and not 1 <= percent <= 100:
        raise CliError(
            f"--percent: must be from 1 to 100 (percent of MySQL's max_connections), got {percent}",
            BAD_USAGE,
        )
    ttl_ms = None if ttl is None else parse_duration_ms(ttl, "--ttl")
    groups = _groups(reserve, no_groups)
    if limit is None and percent is None and ttl_ms is None and groups is None:
        raise CliError(
            "nothing to change: give --limit N, --percent P, --ttl DURATION, --reserve"
            " GROUP=N or --no-groups",
            BAD_USAGE,
        )
    if create and limit is None and percent is None:
        raise CliError("--create: a new quota needs --limit N or --percent P", BAD_USAGE)
    return ttl_ms, groups


def _check_groups_fit(
    groups: tuple[Reservation, ...] | None, before: QuotaStatus | None, limit: int, flag: str
) -> None:
    """The groups set, or the quota's kept, fit the limit; said before anything is written."""
    if groups:
        try:
            Groups().replaced(groups, limit)
        except InvalidInput as error:
            raise CliError(f"--reserve: {error.message}", BAD_USAGE) from error
    elif groups is None and before is not None and before.groups is not None:
        reserved = before.groups.reserved
        if reserved > limit:
            raise CliError(
                f"{flag}: a limit of {limit} is below the {reserved} leases reserved for"
                " groups; lower or remove them first, or in the same change (--reserve,"
                " --no-groups)",
                BAD_USAGE,
            )


def _current(store: LeaseStore, database: str, say: Terminal) -> tuple[QuotaStatus | None, bool]:
    """The quota as it is (None: one whose item set_quota will rewrite), and whether the
    database has a quota item at all."""
    try:
        return store.status(database), True
    except UnknownDatabase:
        return None, False
    except CorruptQuota as error:
        say.print(f"{database}: its quota item is unreadable ({error.problem}); set rewrites it")
        return None, True


def _groups(reserve: list[str] | None, no_groups: bool) -> tuple[Reservation, ...] | None:
    """The groups to set: None keeps the quota's, () removes them."""
    if reserve and no_groups:
        raise CliError("give --reserve or --no-groups, not both", BAD_USAGE)
    if no_groups:
        return ()
    if not reserve:
        return None
    try:
        groups = parse_reservations(",".join(reserve))
        Groups().replaced(groups, MAX_LIMIT)  # names, numbers, duplicates; the limit later
    except InvalidInput as error:
        said = error.message if error.field == "groups" else str(error)
        raise CliError(f"--reserve: {said}", BAD_USAGE) from error
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
        limit = _change("limit", str(before.limit), str(quota.limit))
        ttl = _change("default TTL", span(before.default_ttl_ms), span(quota.default_ttl_ms))
        lines = [f"{database}: {limit}, {ttl}; {before.in_use} in use now"]
        if before.in_use > quota.limit:
            lines.append(
                f"  the quota will drain: {before.in_use} leases are held and the new limit is"
                f" {quota.limit}; none is taken away, and no new lease is granted until fewer"
                f" than {quota.limit} are held"
            )
    if groups is not None:
        lines.append(f"  groups: {format_reservations(groups) or 'none'}")
    return lines


def _change(what: str, before: str, after: str) -> str:
    return f"{what} {before} -> {after}" if before != after else f"{what} {after} (kept)"
