"""Fair shares between functions: groups with reserved leases, borrowing and a cap
(docs/design.md, "Groups").

A quota may name groups (a group is one function or several; by default a caller's group
is its function name). Each names how many leases are **reserved** for it, whether it may
**borrow** from the unreserved pool once its reservation is in use, and an optional **max**
on all it holds. The reservations sum to at most the limit; the rest is the pool.

Every share is a quota of its own, so that every rule the store keeps for one quota (I1 per
item, splitting over shards, reclaiming, fences) keeps each share too, and no new kind of
write condition is needed:
- the pool is the database's own quota (its item, or its shards), limit = limit - reserved;
- a group's reservation is the quota `database~group`, whose limit is the reservation;
- a capped group's borrowing is counted by tickets in the quota `database~group~max`,
  limit = max - reserved: a borrowed lease first takes a ticket there, then the pool lease.
The shares' limits sum to the quota's limit, so live leases never exceed it; a group's
reserved leases are in an item only its own acquirers write to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import InvalidInput
from .model import MAX_LIMIT, GroupStatus, GroupsView, check_int

__all__ = [
    "GroupRule",
    "GroupStatus",
    "Groups",
    "GroupsView",
    "Reservation",
    "cap_quota",
    "check_group",
    "check_reserved_within",
    "format_reservations",
    "parse_reservations",
    "reserved_quota",
]

# Lambda function names: letters, digits, - and _, at most 64 characters.
MAX_GROUP_LENGTH = 64
# Each group's shares are read by `status` and sealed by every change; a handful is what
# the sample's "hotspots" need, and it keeps both to a few requests.
MAX_GROUPS = 16
# Between a quota's name and a group's: never in a database's name (model._NAME) nor a group's.
GROUP_MARK = "~"
# Tags are small numbers carried by pool entries; a quota names at most this many groups
# over its life (tags are never given twice).
MAX_TAG = 9_998
# A ticket outlives its borrowed lease by this much: it is written first, the lease a write
# later, and the cap must count the lease for as long as it lives.
TICKET_SLACK_MS = 1_000

_GROUP = re.compile(r"[A-Za-z0-9_-]+")


def check_group(group: object, field_name: str = "group") -> str:
    if not isinstance(group, str):
        raise InvalidInput(field_name, f"must be a string, got {type(group).__name__}")
    if not 1 <= len(group) <= MAX_GROUP_LENGTH or not _GROUP.fullmatch(group):
        raise InvalidInput(
            field_name,
            f"{group[:MAX_GROUP_LENGTH]!r} is not a group name: 1-{MAX_GROUP_LENGTH} letters,"
            " digits, - or _ (a Lambda function's name)",
        )
    return group


def reserved_quota(database: str, group: str) -> str:
    """The part that holds a group's reserved leases."""
    return f"{database}{GROUP_MARK}{group}"


def cap_quota(database: str, group: str) -> str:
    """The part whose tickets count a capped group's borrowed leases."""
    return f"{database}{GROUP_MARK}{group}{GROUP_MARK}max"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an operator asks for one group: `reserved` leases only it may take, whether it
    may `borrow` from the pool past them, and `max`, a cap on all it holds (None: none)."""

    group: str
    reserved: int = 0
    borrow: bool = True
    max: int | None = None

    def __post_init__(self) -> None:
        check_group(self.group)
        check_int(f"{self.group}.reserved", self.reserved, 0, MAX_LIMIT)
        if not isinstance(self.borrow, bool):
            raise InvalidInput(f"{self.group}.borrow", "must be true or false")
        if self.max is not None:
            check_int(f"{self.group}.max", self.max, 0, MAX_LIMIT)
            if self.max < self.reserved:
                raise InvalidInput(
                    f"{self.group}.max",
                    f"is {self.max}, below the group's reservation of {self.reserved}",
                )

    @property
    def borrow_cap(self) -> int | None:
        """How many pool leases the group may hold at once (None: as many as are free)."""
        if not self.borrow:
            return 0
        return None if self.max is None else self.max - self.reserved


@dataclass(frozen=True, slots=True)
class GroupRule:
    """A reservation as stored: with the group's `tag`, the small number a pool entry
    carries to say which group borrowed it (names would weigh on every write), `retired`
    for a group no longer reserved whose leases may still be live, and how many shard items
    its share and its cap are split over (0: one item each; domain.changes sets them)."""

    reservation: Reservation
    tag: int
    retired: bool = False
    share_shards: int = 0
    cap_shards: int = 0
    # Its cap's items exist (it has been capped since it was named): sealed by every change
    # until it is forgotten, so that a ticket's item never outlives the protocol's reach.
    capped: bool = False

    @property
    def group(self) -> str:
        return self.reservation.group


@dataclass(frozen=True, slots=True)
class Groups:
    """A quota's groups as its root item keeps them."""

    rules: tuple[GroupRule, ...] = ()
    # The last tag given: never given again, so that a forgotten group's pool leases (a
    # stale acquirer may still take one) are never counted as a later group's.
    last_tag: int = 0

    def rule(self, group: str | None) -> GroupRule | None:
        """The live rule of `group` (None: no such group, or retired; it takes the pool)."""
        found = self.named(group) if group is not None else None
        return None if found is None or found.retired else found

    def named(self, group: str) -> GroupRule | None:
        """The rule of `group`, retired or not (None: no such group)."""
        return next((rule for rule in self.rules if rule.group == group), None)

    def by_tag(self, tag: int) -> GroupRule | None:
        return next((rule for rule in self.rules if rule.tag == tag), None)

    @property
    def reserved(self) -> int:
        return sum(rule.reservation.reserved for rule in self.rules if not rule.retired)

    @property
    def active(self) -> tuple[GroupRule, ...]:
        return tuple(rule for rule in self.rules if not rule.retired)

    def replaced(self, reservations: Iterable[Reservation], limit: int) -> Groups:
        """The groups after an operator names `reservations` (every group not named is
        retired: its reservation and cap go, its leases drain); checked against `limit`."""
        wanted: dict[str, Reservation] = {}
        for reservation in reservations:
            if not isinstance(reservation, Reservation):
                raise TypeError(f"expected a Reservation, got {type(reservation).__name__}")
            if reservation.group in wanted:
                raise InvalidInput("groups", f"{reservation.group!r} is named twice")
            wanted[reservation.group] = reservation
        total = sum(reservation.reserved for reservation in wanted.values())
        if total > limit:
            raise InvalidInput(
                "groups", f"reservations sum to {total}, above the quota's limit of {limit}"
            )
        rules: list[GroupRule] = []
        next_tag = max([self.last_tag, *(rule.tag for rule in self.rules)]) + 1
        for rule in self.rules:
            if rule.group in wanted:
                rules.append(replace(rule, reservation=wanted.pop(rule.group), retired=False))
            else:
                rules.append(replace(rule, reservation=Reservation(rule.group), retired=True))
        for reservation in wanted.values():
            if next_tag > MAX_TAG:  # tags are never given twice
                raise InvalidInput(
                    "groups", "this quota has named every group it can: delete and recreate it"
                )
            rules.append(GroupRule(reservation, next_tag))
            next_tag += 1
        if sum(1 for rule in rules if not rule.retired) > MAX_GROUPS:
            raise InvalidInput("groups", f"at most {MAX_GROUPS} groups per quota")
        return Groups(tuple(rules), next_tag - 1)

    def without(self, groups: Iterable[str]) -> Groups:
        """Retired groups whose shares hold nothing any more, forgotten."""
        gone = set(groups)
        kept = tuple(rule for rule in self.rules if not (rule.retired and rule.group in gone))
        last_tag = max([self.last_tag, *(rule.tag for rule in self.rules)])
        return replace(self, rules=kept, last_tag=last_tag)


def check_reserved_within(reserved: int, limit: int) -> None:
    """A limit that the groups' reservations, kept as they are, would not fit."""
    if reserved > limit:
        raise InvalidInput(
            "limit",
            f"is {limit}, below the {reserved} leases reserved for groups:"
            " lower or remove reservations first (or in the same change)",
        )


def parse_reservations(text: str) -> tuple[Reservation, ...]:
    """Reservations as an operator writes them (the template's `Groups` parameter, the
    command line): `api=10,batch=0:max=20:borrow`, each group `name=reserved` followed by
    options `max=N`, `borrow` or `noborrow` (borrowing is on unless said otherwise)."""
    if not isinstance(text, str):
        raise InvalidInput("groups", f"must be a string, got {type(text).__name__}")
    found: list[Reservation] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, sep, rest = part.partition("=")
        if not sep:
            raise InvalidInput("groups", f"{part!r}: write group=reserved[:max=N][:noborrow]")
        reserved, *options = rest.split(":")
        settings: dict[str, object] = {"reserved": _number(name, "reserved", reserved)}
        for option in options:
            key, _, value = option.partition("=")
            if option == "borrow":
                settings["borrow"] = True
            elif option == "noborrow":
                settings["borrow"] = False
            elif key == "max":
                settings["max"] = _number(name, "max", value)
            else:
                raise InvalidInput("groups", f"{part!r}: unknown option {option!r}")
        found.append(Reservation(check_group(name.strip(), "groups"), **settings))  # type: ignore[arg-type]
    return tuple(found)


def _number(group: str, what: str, text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"-?[0-9]{1,12}", text):
        raise InvalidInput(f"{group}.{what}", f"{text!r} is not a whole number")
    return int(text)


def format_reservations(reservations: Iterable[Reservation]) -> str:
    """parse_reservations' inverse."""
    parts = []
    for reservation in reservations:
        text = f"{reservation.group}={reservation.reserved}"
        if reservation.max is not None:
            text += f":max={reservation.max}"
        if not reservation.borrow:
            text += ":noborrow"
        parts.append(text)
    return ",".join(parts)
