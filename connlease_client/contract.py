"""The helper's wire contract, shared by the helper (service) and its callers (the invoke adapter).

The field checks are the domain's own (`check_*` raise `InvalidInput`, a ValueError, which
pydantic reports per field), so the helper and the stores agree on what is valid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from domain.errors import InvalidInput
from domain.groups import GroupStatus, GroupsView, check_group
from domain.model import (
    MAX_TTL_MS,
    Lease,
    QuotaStatus,
    check_database,
    check_holder,
    check_ttl_ms,
    check_wait_ms,
)
from domain.tokens import MAX_FENCE, check_secret, label, parse_token


def _check_token(token: str) -> str:
    parse_token(token)
    return token


def _check_grant_token(token: str) -> str:
    if parse_token(token).fence is None:
        raise InvalidInput("token", "needs the grant's fence: the `token` of the acquire's answer")
    return token


Database = Annotated[StrictStr, AfterValidator(check_database)]
Secret = Annotated[StrictStr, AfterValidator(check_secret)]
GrantToken = Annotated[StrictStr, AfterValidator(_check_token)]
# A renewal extends one grant: a secret alone (which a release may give) names none.
FencedToken = Annotated[StrictStr, AfterValidator(_check_grant_token)]
Holder = Annotated[StrictStr, AfterValidator(check_holder)]
Group = Annotated[StrictStr, AfterValidator(check_group)]
TtlMs = Annotated[StrictInt, AfterValidator(check_ttl_ms)]
WaitMs = Annotated[StrictInt, AfterValidator(check_wait_ms)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def document(self) -> dict[str, Any]:
        """The JSON document sent on the wire; absent optional fields are left out."""
        return self.model_dump(mode="json", exclude_none=True)


class AcquireRequest(_Message):
    """Take a lease; with `wait_ms` the helper waits up to that long for one to free up.
    A caller-proposed `secret` makes a retried acquire return the same grant."""

    action: Literal["acquire"]
    database: Database
    secret: Secret | None = None
    holder: Holder = ""
    ttl_ms: TtlMs | None = None
    wait_ms: WaitMs = 0
    # The caller's group (domain.groups): its reservation first, then the pool if it may
    # borrow. None: the pool, as any caller the quota's groups do not name.
    group: Group | None = None


class ReleaseRequest(_Message):
    """Give back the grant `token` names (the acquire's answer; or the proposed secret
    alone, for a grant whose answer was lost)."""

    action: Literal["release"]
    database: Database
    token: GrantToken


class RenewRequest(_Message):
    """Extend a live lease. `renewal` numbers a holder's renewals of one lease (1, 2, ...):
    a retried call carries the same number and gets the first answer back, while the next
    renewal is a new request."""

    action: Literal["renew"]
    database: Database
    token: FencedToken
    renewal: StrictInt = Field(ge=1)
    ttl_ms: TtlMs | None = None


class StatusRequest(_Message):
    """The quota's use; with `group`, one group's only (its leases and its share)."""

    action: Literal["status"]
    database: Database
    group: Group | None = None


HelperAction = AcquireRequest | ReleaseRequest | RenewRequest | StatusRequest
HelperRequest = Annotated[HelperAction, Field(discriminator="action")]


class _Answer(_Message):
    """Answers ignore fields they do not know: a newer helper may add some, and its
    older callers must keep working (requests stay strict)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class LeaseDoc(_Answer):
    """A lease as the helper shows it: outside the holder's own answers, its id is its label
    without the shard (`domain.tokens.label`), nothing derived from its secret."""

    id: str
    holder: str
    expires_at_ms: int = Field(le=2**53)
    fence: int = Field(0, ge=0, le=MAX_FENCE)
    group: str = ""
    borrowed: bool = False
    granted_at_ms: int = Field(0, ge=0, le=2**53)  # 0: not known (an entry from before)

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


class GroupDoc(_Answer):
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


class AcquireResponse(_Answer):
    ok: Literal[True] = True
    action: Literal["acquire"] = "acquire"
    outcome: Literal["granted", "no_capacity"]
    database: str
    lease: LeaseDoc | None = None
    token: str | None = None  # with granted: what release and renew need (the holder's alone)
    remaining: int
    reclaimed: list[LeaseDoc] = []
    waited_ms: int = 0
    others_waiting: bool | None = None  # with granted: an acquirer found the quota full lately
    # Only with no_capacity: what the quota looked like and when its earliest lease ends.
    limit: int | None = None
    in_use: int | None = None
    retry_after_ms: int | None = Field(None, le=MAX_TTL_MS)


class ReleaseResponse(_Answer):
    ok: Literal[True] = True
    action: Literal["release"] = "release"
    outcome: Literal["released", "already_released"]
    database: str


class RenewResponse(_Answer):
    ok: Literal[True] = True
    action: Literal["renew"] = "renew"
    outcome: Literal["renewed", "lost"]
    database: str
    lease: LeaseDoc | None = None
    remaining: int | None = None  # leases free right after the renewal
    others_waiting: bool | None = None


class StatusResponse(_Answer):
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


class ErrorDetail(_Answer):
    field: str
    message: str


class ErrorBody(_Answer):
    type: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(_Answer):
    ok: Literal[False] = False
    error: ErrorBody


SuccessResponse = Annotated[
    AcquireResponse | ReleaseResponse | RenewResponse | StatusResponse,
    Field(discriminator="action"),
]
