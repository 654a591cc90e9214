"""Quotas and leases: what connlease keeps per database, and the checks on their inputs."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .errors import InvalidInput
from .tokens import label

MAX_NAME_LENGTH = 128
MAX_LEASE_ID_LENGTH = 64
# Every write to a quota costs write units for the whole item, holders included: keep them
# short (a function name and a request-id prefix).
MAX_HOLDER_LENGTH = 32
# One quota lives in one DynamoDB item (400 KB); a lease entry with its holder is under 70 B.
MAX_LIMIT = 2000
MIN_TTL_MS = 100
MAX_TTL_MS = 24 * 3600 * 1000
# No caller waits for a lease longer than a Lambda invocation can live: the helper's limit
# and the client's, checked by check_wait_ms.
MAX_WAIT_MS = 15 * 60 * 1000
# A refused acquirer notes in the item when it last found the quota full (at most this
# often per item), so that a warm holder can tell whether anyone waits for its slot.
WANTED_REFRESH_MS = 250
# A waiter is taken to have gone once its note is this old: waiters poll well within it
# (the client's default backoff caps its waits at 1 s).
WANTED_WINDOW_MS = 3_000
# How far apart the clocks of the hosts that write, hold and reclaim a lease may be (NTP
# keeps Lambda's within milliseconds; 2 s allows for a bad host). An expiry is the
# writer's clock plus the TTL: a lease is reclaimed only this long after it, and a holder
# closes its connection this long before it (docs/design.md, "Clocks").
SKEW_MARGIN_MS = 2_000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*")
_LEASE_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_database(database: object) -> str:
    return _check_token(
        "database",
        database,
        _NAME,
        MAX_NAME_LENGTH,
        "letters, digits and . _ : / @ -, starting with a letter or digit",
    )


def limit_of_percent(max_connections: int, percent: int) -> int:
    """A limit of `percent` of the server's max_connections, at least 1: the seeder's
    LimitPercent and `connlease set --percent` size a quota alike."""
    return max(1, max_connections * percent // 100)


def is_database_name(key: str) -> bool:
    """Whether an item's key is a database's own: a shard's (`#`) or a group's (`~`) has a
    character no database name may."""
    return len(key) <= MAX_NAME_LENGTH and _NAME.fullmatch(key) is not None


def check_lease_id(lease_id: object) -> str:
    return _check_token(
        "lease_id", lease_id, _LEASE_ID, MAX_LEASE_ID_LENGTH, "letters, digits, _ and -"
    )


def check_holder(holder: object) -> str:
    if not isinstance(holder, str):
        raise InvalidInput("holder", f"must be a string, got {type(holder).__name__}")
    if len(holder) > MAX_HOLDER_LENGTH:
        raise InvalidInput("holder", f"is {len(holder)} characters; at most {MAX_HOLDER_LENGTH}")
    if not (holder.isascii() and holder.isprintable()):
        raise InvalidInput("holder", "must be printable ASCII")
    return holder


def check_limit(limit: object) -> int:
    return check_int("limit", limit, 1, MAX_LIMIT)


def check_ttl_ms(ttl_ms: object, field: str = "ttl_ms") -> int:
    return check_int(field, ttl_ms, MIN_TTL_MS, MAX_TTL_MS)


def check_wait_ms(wait_ms: object, field: str = "wait_ms") -> int:
    """A wait, budget or margin in milliseconds: a whole number from 0 (no waiting) to
    15 minutes, a Lambda invocation's longest life."""
    return check_int(field, wait_ms, 0, MAX_WAIT_MS)


def new_lease_id() -> str:
    """A random, compact lease id: 96 bits, 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


def _check_token(
    field: str, value: object, pattern: re.Pattern[str], max_len: int, allowed: str
) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidInput(field, f"is {len(value)} characters; at most {max_len}")
    if not pattern.fullmatch(value):
        raise InvalidInput(field, f"{value!r} has characters outside {allowed}")
    return value


def check_int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(field, f"is {value}; must be between {low} and {high}")
    return value


@dataclass(frozen=True, slots=True)
class Quota:
    """How many leases a database allows at once, and how long a lease lasts by default.

    An item's limit may be 0: a shard's share after a lowering, or the share of the leases
    a quota held before it was split. A quota set by a caller is at least 1 (set_quota)."""

    limit: int
    default_ttl_ms: int

    def __post_init__(self) -> None:
        check_int("limit", self.limit, 0, MAX_LIMIT)
        check_ttl_ms(self.default_ttl_ms, "default_ttl_ms")


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to hold one connection until `expires_at_ms` (epoch milliseconds).

    `id` is its key in its item (a hash of the grant's secret: `domain.tokens`), shown only
    to its holder and to those who may read the table; `fence` numbers the grants of its
    quota item, higher for a later one (0: an entry from before fences)."""

    id: str
    holder: str
    expires_at_ms: int
    fence: int = 0
    # A pool lease a group took: its group's tag as stored (0: none); `group` and
    # `borrowed` say the same by name, as status shows it (domain.groups).
    tag: int = 0
    group: str = ""
    borrowed: bool = False
    # When it was granted (epoch ms, to the second in DynamoDB; 0: an entry from before).
    granted_at_ms: int = 0

    def is_live(self, now_ms: int) -> bool:
        return self.expires_at_ms > now_ms


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """One group's use of its quota at one instant (domain.groups)."""

    group: str
    reserved: int
    borrow: bool
    max: int | None
    reserved_in_use: int
    borrowed: int
    retired: bool = False

    @property
    def remaining_reserved(self) -> int:
        return max(0, self.reserved - self.reserved_in_use)


@dataclass(frozen=True, slots=True)
class GroupsView:
    """What `status` says of the groups: each group's use and the pool's."""

    pool_limit: int
    pool_in_use: int
    groups: tuple[GroupStatus, ...] = ()

    @property
    def reserved(self) -> int:
        """Leases reserved for groups, as status shows them."""
        return sum(status.reserved for status in self.groups if not status.retired)

    def group(self, name: str) -> GroupStatus | None:
        return next((status for status in self.groups if status.group == name), None)


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """What an operator sees: usage of one database's quota at one instant."""

    database: str
    limit: int
    default_ttl_ms: int
    in_use: int
    remaining: int
    expired: int  # expired entries not yet reclaimed; they free up on the next full acquire
    leases: tuple[Lease, ...]
    groups: GroupsView | None = None  # each group's use, if the quota has groups

    def named(self, *, holder: str | None = None, lease: str | None = None) -> tuple[Lease, ...]:
        """The leases an operator names: every lease of `holder`, or the one whose id or
        label (domain.tokens.label: what the command line shows, or without its shard what
        the helper shows) is `lease`. A label that names several is an InvalidInput."""
        if (holder is None) == (lease is None):
            raise InvalidInput("holder", "give a holder or a lease, one of the two")
        if holder is not None:
            check_holder(holder)
            return tuple(found for found in self.leases if found.holder == holder)
        chosen = (
            tuple(found for found in self.leases if found.id == lease)
            or tuple(found for found in self.leases if label(found) == lease)
            or tuple(found for found in self.leases if label(found, shard=False) == lease)
        )
        if len(chosen) > 1:
            raise InvalidInput("lease", f"{lease!r} names {len(chosen)} leases: give the holder")
        return chosen
