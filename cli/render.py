"""What the commands print: rich tables for people, documents for `--json`.

A lease is shown by its label (domain.tokens.label), as the helper's logs show it (the helper
itself leaves the shard out): never its token or secret, which are its holder's alone, nor
its key, which is derived from the secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from connlease_client.contract import StatusResponse
from domain import Lease, QuotaStatus
from domain.tokens import label


def oldest(status: QuotaStatus, now_ms: int) -> Lease | None:
    """The live lease granted first (by grant time, else by expiry)."""
    live = [lease for lease in status.leases if lease.is_live(now_ms)]
    return min(live, key=lambda lease: lease.granted_at_ms or lease.expires_at_ms, default=None)


def when(epoch_ms: int) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%H:%M:%S")


def span(ms: int) -> str:
    """A duration as a person reads it: 950ms, 42s, 3m05s, 2h10m."""
    seconds = ms // 1000
    if abs(ms) < 1000:
        return f"{ms}ms"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def lease_doc(lease: Lease, now_ms: int) -> dict[str, Any]:
    return {
        "lease": label(lease),
        "holder": lease.holder,
        "group": lease.group or None,
        "borrowed": lease.borrowed,
        "granted_at_ms": lease.granted_at_ms or None,
        "expires_at_ms": lease.expires_at_ms,
        "held_ms": now_ms - lease.granted_at_ms if lease.granted_at_ms else None,
        "live": lease.is_live(now_ms),
    }


def status_doc(status: QuotaStatus, now_ms: int) -> dict[str, Any]:
    """The helper's status answer (connlease_client.contract), less its lease list, with the
    oldest live lease."""
    document = StatusResponse.of(status).document()
    for key in ("ok", "action", "leases"):
        document.pop(key, None)
    first = oldest(status, now_ms)
    document["oldest"] = None if first is None else lease_doc(first, now_ms)
    return document


def status_table(statuses: list[QuotaStatus], now_ms: int) -> Table:
    table = Table(title="connlease quotas", title_justify="left")
    for column in ("database", "limit", "in use", "remaining", "expired", "default TTL"):
        table.add_column(column, justify="left" if column == "database" else "right")
    table.add_column("oldest lease")
    for status in statuses:
        first = oldest(status, now_ms)
        table.add_row(
            status.database,
            str(status.limit),
            str(status.in_use),
            str(status.remaining),
            str(status.expired),
            span(status.default_ttl_ms),
            "-" if first is None else _oldest(first, now_ms),
        )
    return table


def _oldest(lease: Lease, now_ms: int) -> str:
    held = f"held {span(now_ms - lease.granted_at_ms)}" if lease.granted_at_ms else "held ?"
    return f"{label(lease)} {lease.holder or '(no holder)'}, {held}"


def groups_table(status: QuotaStatus) -> Table | None:
    view = status.groups
    if view is None:
        return None
    table = Table(title=f"{status.database}: groups", title_justify="left")
    for column in ("group", "reserved", "in use", "borrowed", "max", "borrows"):
        table.add_column(column, justify="left" if column == "group" else "right")
    table.add_row("(pool)", str(view.pool_limit), str(view.pool_in_use), "", "", "")
    for group in view.groups:
        table.add_row(
            group.group + (" (retired)" if group.retired else ""),
            str(group.reserved),
            str(group.reserved_in_use),
            str(group.borrowed),
            "-" if group.max is None else str(group.max),
            "yes" if group.borrow else "no",
        )
    return table


def leases_table(status: QuotaStatus, now_ms: int) -> Table:
    table = Table(
        title=f"{status.database}: {status.in_use} of {status.limit} in use", title_justify="left"
    )
    for column in ("lease", "holder", "group", "granted", "held", "expires", "left"):
        table.add_column(column, justify="right" if column in ("held", "left") else "left")
    for lease in sorted(status.leases, key=lambda found: found.granted_at_ms):
        live = lease.is_live(now_ms)
        group = lease.group + (" (borrowed)" if lease.borrowed else "") if lease.group else "-"
        table.add_row(
            label(lease),
            lease.holder or "-",
            group,
            when(lease.granted_at_ms),
            span(now_ms - lease.granted_at_ms) if lease.granted_at_ms else "-",
            when(lease.expires_at_ms),
            span(lease.expires_at_ms - now_ms) if live else "expired",
        )
    return table
