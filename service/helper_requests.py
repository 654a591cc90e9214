"""The requests the helper accepts, as it validates them: pydantic models whose field
checks are the domain's own (`check_*` raise `InvalidInput`, a ValueError, which pydantic
reports per field), so that the helper and the stores agree on what is valid.

The helper's own: its callers build these documents with the same checks
(adapters/lambda_invoke.py) and read its answers with `connlease_client.contract`, so
that a function using the client needs no pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from domain.errors import InvalidInput
from domain.groups import check_group
from domain.model import check_database, check_holder, check_ttl_ms, check_wait_ms
from domain.tokens import check_secret_form, parse_token


def _check_token(token: str) -> str:
    parse_token(token)
    return token


def _check_grant_token(token: str) -> str:
    if parse_token(token).fence is None:
        raise InvalidInput("token", "needs the grant's fence: the `token` of the acquire's answer")
    return token


Database = Annotated[StrictStr, AfterValidator(check_database)]
# Its form only: the store estimates how made up it is, given the lease's holder, database
# and group and at its clock's time (domain.tokens.check_secret), and says so as this would.
Secret = Annotated[StrictStr, AfterValidator(check_secret_form)]
GrantToken = Annotated[StrictStr, AfterValidator(_check_token)]
# A renewal extends one grant: a secret alone (which a release may give) names none.
FencedToken = Annotated[StrictStr, AfterValidator(_check_grant_token)]
Holder = Annotated[StrictStr, AfterValidator(check_holder)]
Group = Annotated[StrictStr, AfterValidator(check_group)]
TtlMs = Annotated[StrictInt, AfterValidator(check_ttl_ms)]
WaitMs = Annotated[StrictInt, AfterValidator(check_wait_ms)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcquireRequest(_Request):
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


class ReleaseRequest(_Request):
    """Give back the grant `token` names (the acquire's answer; or the proposed secret
    alone, for a grant whose answer was lost)."""

    action: Literal["release"]
    database: Database
    token: GrantToken


class RenewRequest(_Request):
    """Extend a live lease. `renewal` numbers a holder's renewals of one lease (1, 2, ...):
    a retried call carries the same number and gets the first answer back, while the next
    renewal is a new request."""

    action: Literal["renew"]
    database: Database
    token: FencedToken
    renewal: StrictInt = Field(ge=1)
    ttl_ms: TtlMs | None = None


class StatusRequest(_Request):
    """The quota's use; with `group`, one group's only (its leases and its share)."""

    action: Literal["status"]
    database: Database
    group: Group | None = None


HelperAction = AcquireRequest | ReleaseRequest | RenewRequest | StatusRequest
HelperRequest = Annotated[HelperAction, Field(discriminator="action")]
