"""The helper's answers: the half of its wire contract that both sides hold in code. The
helper writes them (`document()`), its callers read them back (`read()`).

Plain dataclasses, read with the standard library alone, so that a function using the
client needs no pydantic. The requests the helper accepts are the helper's to validate
(service/helper_requests.py, with pydantic and the domain's checks); callers build them
with the same checks (adapters/lambda_invoke.py).

Reading is strict about what a class names and lenient about the rest: each field it
names has its type (an int is no bool, a number within its bounds, a field without a
default present), while fields it does not name are ignored: a newer helper may add
some, and its older callers must keep working.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin, get_type_hints

from domain.model import MAX_TTL_MS, GroupStatus, GroupsView, Lease, QuotaStatus
from domain.tokens import MAX_FENCE, label

EXACT_INT = 2**53  # the largest integer JSON numbers hold exactly everywhere


class MalformedAnswer(ValueError):
    """An answer that is not what its class says. `where` names the field, never its
    value: an answer may hold a token."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'the answer'}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Bounds:
    """An int field's bounds, both inclusive: `Annotated[int, Bounds(ge=0)]`."""

    ge: int | None = None
    le: int | None = None


class _Document:
    """What every answer class can do: be written as a JSON document, and be read from one."""

    def document(self) -> dict[str, Any]:
        """The JSON document sent on the wire; absent optional fields are left out."""
        written: dict[str, Any] = _plain(self)
        return written

    @classmethod
    def read(cls, document: object) -> Self:
        """The answer `document` (decoded JSON) holds; MalformedAnswer if it is none."""
        kind: Any = cls  # a class is hashable, whatever mypy makes of type[Self]
        read: Self = _reader(kind)(document, "")
        return read


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            name: _plain(item)
            for name in (each.name for each in dataclasses.fields(value))
            if (item := getattr(value, name)) is not None
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


Reader = Callable[[Any, str], Any]


@cache
def _reader(kind: Any) -> Reader:
    """A reader for the type `kind`, made once: `reader(value, where)` is the value read."""
    origin = get_origin(kind)
    if origin is Annotated:
        return _bounded(*get_args(kind))
    if origin in (Union, types.UnionType):
        return _optional(get_args(kind))
    if origin is Literal:
        return _one_of(get_args(kind))
    if origin is list:
        return _list_of(_reader(get_args(kind)[0]))
    if kind in (bool, int, str):
        return _exactly(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _object(kind)
    raise TypeError(f"no reader for {kind!r}")  # a field type this module does not use


def _exactly(kind: type) -> Reader:
    name = {bool: "a boolean", int: "an integer", str: "a string"}[kind]

    def read(value: Any, where: str) -> Any:
        if type(value) is not kind:  # exactly: True is no integer
            raise MalformedAnswer(where, f"must be {name}")
        return value

    return read


def _bounded(kind: Any, *extras: Any) -> Reader:
    inner = _reader(kind)
    bounds = [extra for extra in extras if isinstance(extra, Bounds)]

    def read(value: Any, where: str) -> Any:
        value = inner(value, where)
        for bound in bounds:
            if bound.ge is not None and value < bound.ge:
                raise MalformedAnswer(where, f"must be at least {bound.ge}")
            if bound.le is not None and value > bound.le:
                raise MalformedAnswer(where, f"must be at most {bound.le}")
        return value

    return read


def _optional(options: tuple[Any, ...]) -> Reader:
    (kind,) = [option for option in options if option is not type(None)]
    inner = _reader(kind)

    def read(value: Any, where: str) -> Any:
        return None if value is None else inner(value, where)

    return read


def _one_of(allowed: tuple[Any, ...]) -> Reader:
    said = ", ".join(json.dumps(each) for each in allowed)

    def read(value: Any, where: str) -> Any:
        if not any(value == each and type(value) is type(each) for each in allowed):
            raise MalformedAnswer(where, f"must be {said}")
        return value

    return read


def _list_of(item: Reader) -> Reader:
    def read(value: Any, where: str) -> Any:
        if type(value) is not list:
            raise MalformedAnswer(where, "must be a list")
        return [item(each, f"{where}.{index}") for index, each in enumerate(value)]

    return read


def _object(kind: type) -> Reader:
    hints = get_type_hints(kind, include_extras=True)
    fields = [
        (
            each.name,
            _reader(hints[each.name]),
            each.default is dataclasses.MISSING and each.default_factory is dataclasses.MISSING,
        )
        for each in dataclasses.fields(kind)
    ]

    def read(value: Any, where: str) -> Any:
        if type(value) is not dict:
            raise MalformedAnswer(where, "must be an object")
        values = {}
        for name, reader, required in fields:
            at = f"{where}.{name}" if where else name
            if name in value:
                values[name] = reader(value[name], at)
            elif required:
                raise MalformedAnswer(at, "is missing")
        return kind(**values)

    return read


@dataclass(frozen=True, kw_only=True)
class LeaseDoc(_Document):
    """A lease as the helper shows it: outside the holder's own answers, its id is its label
    without the shard (`domain.tokens.label`), nothing derived from its secret."""

    id: str
    holder: str
    expires_at_ms: Annotated[int, Bounds(le=EXACT_INT)]
    fence: Annotated[int, Bounds(ge=0, le=MAX_FENCE)] = 0
    group: str = ""
    borrowed: bool = False
    granted_at_ms: Annotated[int, Bounds(ge=0, le=EXACT_INT)] = 0  # 0: not known (from before)

    @classmethod
    def of(cls, lease: Lease, *, labelled: bool = False) -> LeaseDoc:
        return cls(
            id=label(lease, shard=False) if labelled else lease.id,
            holder=lease.holder,
            expires_at_ms=lease.expires_at_ms,
            fence=lease.fence,
            group=lease.group,
            borrowed=lease.borrowed,
            granted_at_ms=lease.granted_at_ms,
        )

    def to_domain(self) -> Lease:
        return Lease(
            self.id,
            self.holder,
            self.expires_at_ms,
            self.fence,
            group=self.group,
            borrowed=self.borrowed,
            granted_at_ms=self.granted_at_ms,
        )


@dataclass(frozen=True, kw_only=True)
class GroupDoc(_Document):
    """One group's use of the quota, as status shows it."""

    group: str
    reserved: int
    borrow: bool
    max: int | None = None
    reserved_in_use: int
    borrowed: int
    retired: bool = False

    @classmethod
    def of(cls, status: GroupStatus) -> GroupDoc:
        return cls(
            group=status.group,
            reserved=status.reserved,
            borrow=status.borrow,
            max=status.max,
            reserved_in_use=status.reserved_in_use,
            borrowed=status.borrowed,
            retired=status.retired,
        )

    def to_domain(self) -> GroupStatus:
        return GroupStatus(
            self.group,
            self.reserved,
            self.borrow,
            self.max,
            self.reserved_in_use,
            self.borrowed,
            self.retired,
        )


@dataclass(frozen=True, kw_only=True)
class AcquireResponse(_Document):
    ok: Literal[True] = True
    action: Literal["acquire"] = "acquire"
    outcome: Literal["granted", "no_capacity"]
    database: str
    lease: LeaseDoc | None = None
    token: str | None = None  # with granted: what release and renew need (the holder's alone)
    remaining: int
    reclaimed: list[LeaseDoc] = field(default_factory=list)
    waited_ms: int = 0
    others_waiting: bool | None = None  # with granted: an acquirer found the quota full lately
    # Only with no_capacity: what the quota looked like and when its earliest lease ends.
    limit: int | None = None
    in_use: int | None = None
    retry_after_ms: Annotated[int, Bounds(le=MAX_TTL_MS)] | None = None


@dataclass(frozen=True, kw_only=True)
class ReleaseResponse(_Document):
    ok: Literal[True] = True
    action: Literal["release"] = "release"
    outcome: Literal["released", "already_released"]
    database: str


@dataclass(frozen=True, kw_only=True)
class RenewResponse(_Document):
    ok: Literal[True] = True
    action: Literal["renew"] = "renew"
    outcome: Literal["renewed", "lost"]
    database: str
    lease: LeaseDoc | None = None
    remaining: int | None = None  # leases free right after the renewal
    others_waiting: bool | None = None


@dataclass(frozen=True, kw_only=True)
class StatusResponse(_Document):
    ok: Literal[True] = True
    action: Literal["status"] = "status"
    database: str
    limit: int
    default_ttl_ms: int
    in_use: int
    remaining: int
    expired: int
    leases: list[LeaseDoc]
    # With groups: the unreserved pool's limit and use, and each group's.
    pool_limit: int | None = None
    pool_in_use: int | None = None
    groups: list[GroupDoc] | None = None

    @classmethod
    def of(cls, status: QuotaStatus) -> StatusResponse:
        view = status.groups
        return cls(
            pool_limit=None if view is None else view.pool_limit,
            pool_in_use=None if view is None else view.pool_in_use,
            groups=None if view is None else [GroupDoc.of(group) for group in view.groups],
            database=status.database,
            limit=status.limit,
            default_ttl_ms=status.default_ttl_ms,
            in_use=status.in_use,
            remaining=status.remaining,
            expired=status.expired,
            leases=[LeaseDoc.of(lease, labelled=True) for lease in status.leases],
        )

    def to_domain(self) -> QuotaStatus:
        return QuotaStatus(
            database=self.database,
            limit=self.limit,
            default_ttl_ms=self.default_ttl_ms,
            in_use=self.in_use,
            remaining=self.remaining,
            expired=self.expired,
            leases=tuple(lease.to_domain() for lease in self.leases),
            groups=None
            if self.groups is None
            else GroupsView(
                self.pool_limit or 0,
                self.pool_in_use or 0,
                tuple(group.to_domain() for group in self.groups),
            ),
        )


@dataclass(frozen=True, kw_only=True)
class ErrorDetail(_Document):
    field: str
    message: str


@dataclass(frozen=True, kw_only=True)
class ErrorBody(_Document):
    type: str
    message: str
    details: list[ErrorDetail] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ErrorResponse(_Document):
    ok: Literal[False] = False
    error: ErrorBody
