"""Grant tokens: the secret that makes a lease its holder's alone (docs/design.md, "Who may
do what").

A grant's token is `secret.fence[.shard]`. The secret is 128 random bits the holder (or the
store for it) makes, or a proposal as hard to guess (domain.entropy); the store never keeps
it, only the lease's key, a hash of it; and what `status` and the logs show of a lease, its
label, is not derived from it at all, so that nothing shown of a lease can be turned into
the power to release or renew it, nor checked against a guess of its secret. The fence is
the grant's number, which no two grants of one quota item share: a token from an earlier
grant of the same secret (a reused secret, an async retry) is not the current grant's and
changes nothing. A split quota's token also names the shard.

A group's lease says where it lives (domain.groups): `...~group~r` for one of the group's
reserved leases, `...~group~F[.S]` for a borrowed lease counted by a ticket (the ticket's
own fence and shard in the group's cap quota).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from .entropy import MIN_PROPOSAL_BITS, estimated_bits
from .errors import InvalidInput

# A secret a caller proposes must be as hard to guess as ours: 22 characters at the least (128
# bits, drawn at random: secrets.token_urlsafe(16)), and no shorter to describe than 96 bits
# (domain.entropy: so that a random one is refused with a chance of 2^-32 at most).
MIN_SECRET_CHARS = 22
MAX_SECRET_CHARS = 64
# A token's secret may be shorter: one proposed before proposals needed 22 characters still
# gives back and renews the grant it was proposed for.
MIN_TOKEN_SECRET_CHARS = 16
# A lease's key in its item: 48 bits of the secret's hash. Every byte of every entry is
# paid on every write. Only those who may read the table see it (an operator, a direct-mode
# function: IAM is their boundary); the helper shows a label, which is not derived from it.
KEY_CHARS = 8
MAX_FENCE = 2**53  # exact in JSON numbers and in DynamoDB's

# ASCII only: `\d` takes any script's digits (Arabic-Indic, fullwidth...), and int() reads
# them: one grant had many tokens, each its own idempotency key.
_SECRET = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# Numbers as an acquire writes them, with no leading zeros: one grant, one token, and so one
# idempotency key (`S.01` and `S.0001` named the grant `S.1`, each its own key).
_FENCE = r"(0|[1-9][0-9]{0,15})"
_SHARD = r"(0|[1-9][0-9]{0,3})"
_TOKEN = re.compile(
    rf"([A-Za-z0-9_-]+)(?:\.{_FENCE}(?:\.{_SHARD})?)?"
    rf"(?:~([A-Za-z0-9_-]{{1,64}})~(?:(r)|{_FENCE}(?:\.{_SHARD})?))?",
    re.ASCII,
)
NOT_A_TOKEN = "is not a grant token (the `token` of an acquire's answer)"


def new_secret() -> str:
    """128 random bits, 22 URL-safe characters."""
    return secrets.token_urlsafe(16)


def check_secret(
    secret: object,
    field: str = "secret",
    *,
    holder: str = "",
    database: str = "",
    group: str | None = None,
    now_ms: int | None = None,
) -> str:
    """A proposed secret, if it is one: of the form, and not made up (never echoed). Its
    estimate is given what status shows of its lease (holder, database, group) at `now_ms`
    (the caller's clock; None: any time this century), so that a secret made of those and a
    timestamp is refused (F7). Each check is one estimate by one distribution, for any
    context (domain.entropy): a random secret is refused with a chance of 2^-32 at most;
    a client that checks before the helper does adds its own 2^-32 at most."""
    secret = check_secret_form(secret, field)
    given = (holder, database) if group is None else (holder, database, group)
    bits = estimated_bits(secret, given, now_ms)
    if bits < MIN_PROPOSAL_BITS:
        raise InvalidInput(
            field,
            f"looks made up, not drawn at random: given the holder, database and group status"
            f" shows, it can be described in {bits:.0f} bits, and a proposal needs"
            f" {MIN_PROPOSAL_BITS} (secrets.token_urlsafe(16), domain.tokens.new_secret)",
        )
    return secret


def check_secret_form(secret: object, field: str = "secret") -> str:
    """A proposal's form alone: 22-64 base64url characters (what the helper's request checks
    before the store checks the rest, with the lease's context and its clock)."""
    if not isinstance(secret, str):
        raise InvalidInput(field, f"must be a string, got {type(secret).__name__}")
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS or not _SECRET.fullmatch(secret):
        hint = ""
        if secret.endswith("=") and _SECRET.fullmatch(secret.rstrip("=")):
            hint = ": strip the base64 `=` padding"
        elif _SECRET.fullmatch(secret.replace("+", "-").replace("/", "_").rstrip("=")):
            hint = ": base64url, `-` and `_` for `+` and `/`, without `=` padding"
        raise InvalidInput(
            field,
            f"must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} letters, digits, _ or - drawn at"
            f" random (secrets.token_urlsafe(16), domain.tokens.new_secret){hint}",
        )
    return secret


def lease_key(database: str, secret: str) -> str:
    """The key a secret's lease has in the quota `database` (the same in every shard)."""
    digest = hashlib.sha256(f"{database}\n{secret}".encode()).digest()
    # No '-': a key never reads as a shard's lease id (`7-key`).
    return base64.urlsafe_b64encode(digest).decode()[:KEY_CHARS].replace("-", "_")


class Shown(Protocol):
    """A lease as status shows it (domain.model.Lease)."""

    @property
    def id(self) -> str: ...
    @property
    def fence(self) -> int: ...
    @property
    def group(self) -> str: ...
    @property
    def borrowed(self) -> bool: ...


def label(lease: Shown, *, shard: bool = True) -> str:
    """What anyone but its holder is shown of a lease: its grant, by its fence and where it
    lives (its token without the secret): `17` in a quota in one item, `17.3` in shard 3,
    and a group's reserved lease `17~api` (`17.3~api`). Nothing of it comes from the secret,
    so nothing shown of a lease can be checked against a guess of its secret. The helper
    leaves the shard out (`shard=False`): a proposed secret's lease goes to a shard the
    secret picks first (domain.shards.first_shard)."""
    where, _, key = lease.id.rpartition("-")  # a key has no '-': only a shard's id does
    text = str(lease.fence)
    if shard and where and key:
        text += f".{where}"
    if lease.group and not lease.borrowed:
        text += f"~{lease.group}"
    return text


def token_label(grant: Token) -> str | None:
    """The label of the lease a token names, as `label` gives it (None: a secret alone,
    which names no grant): what the helper logs of a release or a renewal."""
    if grant.fence is None:
        return None
    text = str(grant.fence) if grant.shard is None else f"{grant.fence}.{grant.shard}"
    return f"{text}~{grant.group}" if grant.group is not None and grant.reserved else text


def lease_id_of(database: str, grant: Token) -> str:
    """The id of the lease a token's grant holds (public: the key, and its shard)."""
    if grant.group is not None and grant.reserved:
        database = f"{database}~{grant.group}"  # domain.groups.reserved_quota
    key = lease_key(database, grant.secret)
    return key if grant.shard is None else f"{grant.shard}-{key}"


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed grant token. No fence: any grant of the secret (its proposer giving back a
    lease whose grant it never heard of); no shard: the store looks where it may be."""

    secret: str
    fence: int | None = None
    shard: int | None = None
    group: str | None = None  # a group's lease: reserved, or borrowed with a ticket
    reserved: bool = False
    ticket: Token | None = None  # the borrowed lease's ticket in its group's cap quota

    def __str__(self) -> str:
        text = self.secret
        if self.fence is not None:
            text += f".{self.fence}"
            if self.shard is not None:
                text += f".{self.shard}"
        if self.group is not None and self.fence is not None:
            if self.reserved:
                text += f"~{self.group}~r"
            elif self.ticket is not None and self.ticket.fence is not None:
                text += f"~{self.group}~{self.ticket.fence}"
                if self.ticket.shard is not None:
                    text += f".{self.ticket.shard}"
        return text

    def __repr__(self) -> str:
        # Never the secret, nor any part of it, whatever logs this.
        where = "" if self.group is None else f", group={self.group!r}"
        return f"Token(fence={self.fence}, shard={self.shard}{where})"


def parse_token(token: object) -> Token:
    if not isinstance(token, str):
        raise InvalidInput("token", f"must be a string, got {type(token).__name__}")
    found = _TOKEN.fullmatch(token)
    secret = found.group(1) if found else ""
    if found is None or not MIN_TOKEN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise InvalidInput("token", NOT_A_TOKEN)  # never echoed: it may be someone's token
    _, fence, shard, group, reserved, ticket_fence, ticket_shard = found.groups()
    if group is not None and fence is None:
        raise InvalidInput("token", NOT_A_TOKEN)
    return Token(
        secret,
        None if fence is None else int(fence),
        None if shard is None else int(shard),
        group,
        reserved is not None,
        None
        if ticket_fence is None
        else Token(secret, int(ticket_fence), None if ticket_shard is None else int(ticket_shard)),
    )


def ticket_key(cap: str, lease_key_in_pool: str) -> str:
    """The key of a borrowed lease's ticket in its group's cap (domain.groups.cap_quota):
    derived from the pool lease's key, so that an operator who removes the lease without
    its token removes exactly its ticket too, and no other lease's."""
    return lease_key(cap, lease_key_in_pool)
