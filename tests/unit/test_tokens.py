"""Grant tokens and labels (domain.tokens): a token is read in ASCII only, and what anyone
but a lease's holder is shown of it says nothing of its secret (issue 23)."""

from __future__ import annotations

import pytest

from domain import InvalidInput
from domain.model import Lease
from domain.shards import parse_shard_lease_id
from domain.tokens import label, lease_key, new_secret, parse_token, token_label

SECRET = new_secret()


@pytest.mark.parametrize(
    "tail",
    [
        ".\u0661",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
        ".1.\u0663",
        ".\uff11",  # FULLWIDTH DIGIT ONE
        ".\u0967\u0968",  # DEVANAGARI ONE TWO
        ".1~api~\u0662",
        ".1~api~2.\u0663",
        ".1~\u0430pi~r",  # a Cyrillic a in the group
    ],
)
def test_a_token_with_a_digit_or_letter_outside_ascii_is_not_a_token(tail: str) -> None:
    """On db40c7a `S.` followed by an Arabic-Indic one named the grant `S.1`: one grant had
    many tokens, each its own idempotency key."""
    with pytest.raises(InvalidInput) as refused:
        parse_token(SECRET + tail)

    assert refused.value.field == "token"


@pytest.mark.parametrize("tail", [".01", ".0001", ".1.03", ".1~api~07", ".1~api~7.01", ".00"])
def test_a_token_with_leading_zeros_is_not_a_token(tail: str) -> None:
    """`S.01` and `S.0001` named the grant `S.1`: one grant had many tokens, each its own
    idempotency key. Only the form an acquire gives is a token."""
    with pytest.raises(InvalidInput) as refused:
        parse_token(SECRET + tail)

    assert refused.value.field == "token"


@pytest.mark.parametrize(
    "tail", ["", ".0", ".1", ".10", ".1.0", ".12.3", ".1~api~r", ".1~api~7.10"]
)
def test_a_canonical_token_parses_and_reads_back_as_itself(tail: str) -> None:
    assert str(parse_token(SECRET + tail)) == SECRET + tail


def test_ascii_tokens_still_parse() -> None:
    grant = parse_token(f"{SECRET}.12.3~api~7.1")

    assert (grant.fence, grant.shard, grant.group) == (12, 3, "api")
    assert grant.ticket is not None
    assert (grant.ticket.fence, grant.ticket.shard) == (7, 1)


def test_a_shard_lease_id_is_read_in_ascii_only() -> None:
    assert parse_shard_lease_id("3-Ab3dE9xQ") == (3, "Ab3dE9xQ")
    assert parse_shard_lease_id("\u0663-Ab3dE9xQ") is None


def test_a_label_is_the_grant_and_where_it_lives_never_from_the_secret() -> None:
    one, two = (lease_key("orders", new_secret()) for _ in range(2))

    assert label(Lease(one, "", 0, 17)) == label(Lease(two, "", 0, 17)) == "17"
    assert label(Lease(f"3-{one}", "", 0, 17)) == "17.3"
    assert label(Lease(f"3-{one}", "", 0, 17), shard=False) == "17"
    assert label(Lease(f"3-{one}", "", 0, 17, group="api")) == "17.3~api"
    assert label(Lease(one, "", 0, 17, group="api", borrowed=True)) == "17"  # a pool lease


def test_the_logs_label_of_a_token_is_its_leases_label() -> None:
    assert token_label(parse_token(f"{SECRET}.17.3")) == "17.3"
    assert token_label(parse_token(f"{SECRET}.17~api~r")) == "17~api"
    assert token_label(parse_token(f"{SECRET}.17~api~4")) == "17"
    assert token_label(parse_token(SECRET)) is None  # a secret alone names no grant
