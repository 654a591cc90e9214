"""A proposed secret must be drawn at random (issue 23, item 1): made-up ones are refused,
random ones never are (docs/design.md, "Who may do what")."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from itertools import product

import pytest

from domain import InvalidInput
from domain.entropy import MIN_PROPOSAL_BITS, estimated_bits
from domain.tokens import MIN_SECRET_CHARS, check_secret, new_secret, parse_token

# What the helper granted on db40c7a, and the victim's proposal whose lease was taken over.
ISSUE_23 = ("a" * 16, "0" * 16, "1234567890123456", "password_password", "orders-fn-000042")
# Made-up strings of the right form and length: each must be refused by its estimate.
MADE_UP = (
    "a" * 22,
    "0" * 22,
    "a" * 64,
    "1234567890123456789012",
    "password_password_pass",
    "orders-fn-000042-000043",
    "orders-function-000042",
    "re-granted-secret-0001",
    "one-secret-for-two-quotas",
    "ambiguous-secret-00000001",
    "my-lambda-request-id-1234",
    "correcthorsebatterystaple",
    "thisismysecretpassword",
    "OrdersFunctionRequest0042",
    "helper-test-secret-number-1",
    "batch_job_secret_token_v2",
    "abcdefghijklmnopqrstuv",
    "0123456789abcdef012345",
    "QWERTYUIOPASDFGHJKLZXC",
    "abababababababababababab",
    "Xy_9abcDXy_9abcDXy_9abcD",
    "PasswordPasswordPassword",
    "0123456789" * 6,
)


def random_proposals() -> list[str]:
    """What callers draw: the client's own (new_secret), secrets' URL-safe and hex tokens of
    128 bits and more, and UUIDs (122 random bits)."""
    drawn = [new_secret() for _ in range(3_000)]
    drawn += [secrets.token_urlsafe(16) for _ in range(3_000)]
    drawn += [secrets.token_hex(16) for _ in range(1_500)]
    drawn += [str(uuid.uuid4()) for _ in range(500)]
    drawn += [secrets.token_urlsafe(n) for n in range(17, 49) for _ in range(15)]
    drawn += [secrets.token_hex(n) for n in range(17, 33) for _ in range(15)]
    return drawn


def test_no_random_proposal_is_refused() -> None:
    drawn = random_proposals()

    refused = []
    for secret in drawn:
        try:
            check_secret(secret)
        except InvalidInput:
            refused.append(secret)

    assert refused == []
    # Far from the line: a 128-bit secret is under it with a chance of 2^-32 at most.
    assert min(estimated_bits(secret) for secret in drawn[:6_000]) > MIN_PROPOSAL_BITS + 20


@pytest.mark.parametrize("secret", ISSUE_23)
def test_the_proposals_granted_on_db40c7a_are_refused(secret: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_secret(secret)

    assert refused.value.field == "secret"
    assert secret not in str(refused.value)  # never echoed


@pytest.mark.parametrize("secret", ISSUE_23)
def test_the_issues_proposals_made_long_enough_are_refused_as_made_up(secret: str) -> None:
    longer = (secret * 4)[:MIN_SECRET_CHARS]

    assert estimated_bits(longer) < MIN_PROPOSAL_BITS
    with pytest.raises(InvalidInput, match="looks made up"):
        check_secret(longer)


@pytest.mark.parametrize("secret", MADE_UP)
def test_made_up_proposals_of_the_right_form_are_refused(secret: str) -> None:
    assert estimated_bits(secret) < MIN_PROPOSAL_BITS
    with pytest.raises(InvalidInput, match="looks made up") as refused:
        check_secret(secret)

    assert secret not in str(refused.value)


def test_a_proposal_needs_22_characters_of_base64url() -> None:
    with pytest.raises(InvalidInput, match="22-64"):
        check_secret(secrets.token_urlsafe(16)[:21])
    with pytest.raises(InvalidInput, match="22-64"):
        check_secret(secrets.token_urlsafe(16)[:21] + "+")
    assert check_secret(new_secret()) is not None


def test_a_token_whose_secret_was_proposed_before_22_were_needed_still_parses() -> None:
    """A grant in flight when the helper was upgraded is still given back and renewed."""
    old = secrets.token_urlsafe(12)  # 16 characters: a proposal the old helper granted

    grant = parse_token(f"{old}.7")

    assert (grant.secret, grant.fence) == (old, 7)


def test_the_model_of_made_up_strings_is_a_distribution() -> None:
    """What makes a random secret's refusal improbable (domain.entropy): no set of strings
    gets more than probability 1, so fewer than 2^96 strings can be under 96 bits. Every
    string of one and two characters, summed."""
    alphabet = string.ascii_letters + string.digits + "-_"

    total = sum(
        2 ** -estimated_bits("".join(chars))
        for n in (1, 2)
        for chars in product(alphabet, repeat=n)
    )

    assert 0 < total <= 1


# F7: what status shows (holder, grant time to the second), then a guess of the millisecond.
NOW_MS = 1_796_636_100_417
F7 = (
    ("invoice-sync/8f14e45f", f"invoice-sync-{NOW_MS}"),  # under the floor even alone
    ("reporting-job/8f14e45f", f"reporting-job-{NOW_MS}"),  # guessed at db40c7a (issue 23)
    ("orders-fn/8f14e45f", f"orders-fn-{NOW_MS}123456"),  # epoch ns
    ("orders-fn/8f14e45f", f"orders-{NOW_MS}-31337"),  # and a pid
    ("orders-fn/8f14e45f", "ordersFnProd_2026_12_07_0001"),  # docs/design.md's own (109)
    ("orders-fn/8f14e45f", f"8f14e45f-{NOW_MS}"),  # the request id shown, and the time
    ("orders-function", f"orders-function-{NOW_MS // 1000}"),  # epoch seconds
    ("etl", "nightly-export-20261207T031500"),  # a date and time
)


@pytest.mark.parametrize(("holder", "secret"), F7)
def test_a_proposal_made_of_what_status_shows_and_the_time_is_refused(
    holder: str, secret: str
) -> None:
    with pytest.raises(InvalidInput, match="looks made up") as refused:
        check_secret(secret, holder=holder, database="orders-mysql", now_ms=NOW_MS)

    assert secret not in str(refused.value)
    # Also without the clock (a caller that has none): times anywhere this century.
    assert estimated_bits(secret, (holder, "orders-mysql")) < MIN_PROPOSAL_BITS


def test_no_random_proposal_is_refused_given_what_status_shows() -> None:
    """The bound holds for every context (domain.entropy): the holder and the time only
    make copies of them and times cheap, never a random secret."""
    contexts = [
        ("orders-fn/8f14e45f", "orders-mysql", None),
        ("", "db", "api"),
        ("x" * 64, "reporting-mysql", "reporting-batch"),
        (secrets.token_urlsafe(16), "orders-mysql", None),
    ]
    drawn = random_proposals()[::3]

    refused = [
        secret
        for n, secret in enumerate(drawn)
        for holder, database, group in [contexts[n % len(contexts)]]
        if _refused(secret, holder, database, group)
    ]

    assert refused == []
    bits = [
        estimated_bits(secret, ("orders-fn/8f14e45f", "orders-mysql"), NOW_MS)
        for secret in drawn[:2_000]
    ]
    assert min(bits) > MIN_PROPOSAL_BITS + 20


def _refused(secret: str, holder: str, database: str, group: str | None) -> bool:
    try:
        check_secret(secret, holder=holder, database=database, group=group, now_ms=NOW_MS)
    except InvalidInput:
        return True
    return False


@pytest.mark.parametrize("now_ms", [None, NOW_MS])
def test_the_model_given_a_context_is_a_distribution(now_ms: int | None) -> None:
    """Every string of one and two characters after a holder and a database, summed."""
    alphabet = string.ascii_letters + string.digits + "-_"
    given = ("orders-fn/8f14e45f", "orders-mysql")

    total = sum(
        2 ** -estimated_bits("".join(chars), given, now_ms)
        for n in (1, 2)
        for chars in product(alphabet, repeat=n)
    )

    assert 0 < total <= 1


def test_a_padded_or_standard_base64_proposal_is_told_what_to_change() -> None:
    padded = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()
    standard = "+/" + secrets.token_urlsafe(16)

    with pytest.raises(InvalidInput, match="strip the base64 `=` padding"):
        check_secret(padded)
    with pytest.raises(InvalidInput, match="`-` and `_` for `\\+` and `/`"):
        check_secret(standard)
    assert check_secret(padded.rstrip("=")) == padded.rstrip("=")
