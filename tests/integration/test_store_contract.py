"""One contract, two stores: the in-memory store and the DynamoDB store behave alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from domain import (
    Granted,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    ReleaseOutcome,
    Renewed,
    UnknownDatabase,
)
from domain.decisions import Reclaim, plan_acquire
from domain.item import Accept, Grant, NewLease, QuotaState
from domain.lease_store import LeaseStore
from domain.model import SKEW_MARGIN_MS
from domain.tokens import Token, lease_key, new_secret, parse_token
from tests.conftest import StoreUnderTest

DB = "orders-mysql"
TTL = 30_000
# Well formed, and no grant's: a secret (16-64 characters) and a fence.
NEVER_GRANTED = "never-granted-secret-0001.1"


def read(store: LeaseStore, key: str) -> QuotaState:
    item = store.items.read(key)
    assert item is not None
    return item


def reclaim(plan: Reclaim, now_ms: int) -> Grant:
    """The write an acquirer makes of its plan, for a lease of its own."""
    return Grant(NewLease("late", "", None), now_ms, plan.victims, plan.limit)


def granted(result: object) -> Granted:
    assert isinstance(result, Granted), f"expected a grant, got {result!r}"
    return result


@pytest.fixture
def quota3(under_test: StoreUnderTest) -> StoreUnderTest:
    under_test.store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))
    return under_test


def test_grants_up_to_the_limit_then_rejects_with_remaining_zero(quota3: StoreUnderTest) -> None:
    store = quota3.store
    grants = [granted(store.acquire(DB, "fn/req-1")) for _ in range(3)]
    assert [g.remaining for g in grants] == [2, 1, 0]
    assert len({g.lease.id for g in grants}) == 3

    rejected = store.acquire(DB, "fn/req-4")

    assert isinstance(rejected, Rejected)
    assert rejected.remaining == 0
    assert rejected.in_use == 3
    assert rejected.limit == 3
    # The earliest lease runs out in a full TTL, and may be reclaimed a skew margin later.
    assert rejected.retry_after_ms == TTL + SKEW_MARGIN_MS
    assert store.status(DB).in_use == 3


def test_a_released_lease_is_free_for_the_next_acquirer(quota3: StoreUnderTest) -> None:
    store = quota3.store
    first, *_ = [granted(store.acquire(DB)) for _ in range(3)]

    assert store.release(DB, first.token) is ReleaseOutcome.RELEASED

    assert granted(store.acquire(DB)).remaining == 0


def test_a_second_release_changes_nothing_and_says_already_released(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    kept = granted(store.acquire(DB))
    gone = granted(store.acquire(DB))
    store.release(DB, gone.token)
    before = quota3.dump()

    assert store.release(DB, gone.token) is ReleaseOutcome.ALREADY_RELEASED
    assert store.release(DB, NEVER_GRANTED) is ReleaseOutcome.ALREADY_RELEASED
    assert store.release(DB, new_secret()) is ReleaseOutcome.ALREADY_RELEASED

    assert quota3.dump() == before
    assert [lease.id for lease in store.status(DB).leases] == [kept.lease.id]


def test_expired_leases_linger_until_an_acquirer_needs_their_room(quota3: StoreUnderTest) -> None:
    store = quota3.store
    for _ in range(3):
        store.acquire(DB, "crashed/holder")
    quota3.clock.advance(TTL)

    status = store.status(DB)
    assert (status.in_use, status.remaining, status.expired) == (0, 3, 3)


def test_an_acquirer_reclaims_expired_leases_in_the_same_write_as_its_grant(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    dead = [granted(store.acquire(DB, "crashed/holder")).lease for _ in range(2)]
    quota3.clock.advance(TTL // 2)
    alive = granted(store.acquire(DB, "live/holder")).lease
    # The first two have expired, and their skew margin has passed: they may be reclaimed.
    quota3.clock.advance(TTL // 2 + SKEW_MARGIN_MS)
    writes_before = quota3.requests()

    grant = granted(store.acquire(DB, "new/holder"))

    assert {lease.id for lease in grant.reclaimed} == {lease.id for lease in dead}
    assert quota3.requests() - writes_before == 2  # the refused add, then reclaim + grant
    status = store.status(DB)
    assert {lease.id for lease in status.leases} == {alive.id, grant.lease.id}
    assert (status.in_use, status.remaining, status.expired) == (2, 1, 0)


def test_a_lease_without_ttl_gets_the_quota_default_and_an_explicit_ttl_is_kept(
    quota3: StoreUnderTest,
) -> None:
    now = quota3.clock.now_ms()
    default = granted(quota3.store.acquire(DB)).lease
    explicit = granted(quota3.store.acquire(DB, ttl_ms=2_500)).lease

    assert default.expires_at_ms == now + TTL
    assert explicit.expires_at_ms == now + 2_500


def test_status_lists_each_lease_with_its_holder(quota3: StoreUnderTest) -> None:
    lease = granted(quota3.store.acquire(DB, "LambdaRDS_Test/8f14e45f")).lease

    status = quota3.store.status(DB)

    assert status.leases == (lease,)
    assert lease.holder == "LambdaRDS_Test/8f14e45f"
    assert (status.limit, status.default_ttl_ms) == (3, TTL)


def test_renew_pushes_a_live_lease_out(quota3: StoreUnderTest) -> None:
    grant = granted(quota3.store.acquire(DB, "fn/req"))
    quota3.clock.advance(TTL - 1)

    renewed = quota3.store.renew(DB, grant.token, ttl_ms=10_000)

    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == quota3.clock.now_ms() + 10_000
    assert renewed.lease.holder == "fn/req"
    assert (renewed.lease.id, renewed.lease.fence) == (grant.lease.id, grant.lease.fence)
    quota3.clock.advance(5_000)
    assert quota3.store.status(DB).in_use == 1


def test_a_renewal_says_how_many_leases_are_free_so_a_warm_holder_knows_if_others_wait(
    quota3: StoreUnderTest,
) -> None:
    mine = granted(quota3.store.acquire(DB, "fn/req")).token
    other = granted(quota3.store.acquire(DB, "fn/other")).lease
    quota3.clock.advance(TTL - 1)  # the other lease has a millisecond left

    with_one_other = quota3.store.renew(DB, mine, ttl_ms=10_000)
    quota3.store.acquire(DB, "fn/third")
    quota3.clock.advance(1 + SKEW_MARGIN_MS)  # the other's has expired, its margin passed
    expired_other = quota3.store.renew(DB, mine, ttl_ms=10_000)
    granted(quota3.store.acquire(DB, "fn/fourth"))  # reclaims the other's expired lease
    full = quota3.store.renew(DB, mine, ttl_ms=10_000)

    renewals = (with_one_other, expired_other, full)
    assert [r.remaining if isinstance(r, Renewed) else r for r in renewals] == [1, 1, 0]
    assert quota3.store.status(DB).in_use == 3
    assert other.id not in {entry.id for entry in quota3.store.status(DB).leases}


@pytest.mark.parametrize("how", ["expired", "released", "unknown"])
def test_renew_of_a_lease_that_is_not_live_reports_it_lost_and_changes_nothing(
    quota3: StoreUnderTest, how: str
) -> None:
    grant = granted(quota3.store.acquire(DB))
    token, lease_id = grant.token, grant.lease.id
    if how == "expired":
        quota3.clock.advance(TTL)
    elif how == "released":
        quota3.store.release(DB, token)
    else:
        token = NEVER_GRANTED
        lease_id = lease_key(DB, parse_token(token).secret)
    before = quota3.dump()

    assert quota3.store.renew(DB, token) == LeaseLost(lease_id)
    assert quota3.dump() == before


def test_lowering_the_limit_keeps_live_leases_and_holds_new_ones_back(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    held = [granted(store.acquire(DB)) for _ in range(3)]

    status = store.set_quota(DB, Quota(limit=1, default_ttl_ms=TTL))

    assert (status.in_use, status.limit, status.remaining) == (3, 1, 0)
    assert isinstance(store.acquire(DB), Rejected)
    for grant in held[:2]:
        store.release(DB, grant.token)
    assert isinstance(store.acquire(DB), Rejected)  # one still held: the new limit is full
    store.release(DB, held[2].token)
    granted(store.acquire(DB))


def test_raising_the_limit_and_ttl_applies_to_the_next_acquire(quota3: StoreUnderTest) -> None:
    store = quota3.store
    for _ in range(3):
        store.acquire(DB)

    store.set_quota(DB, Quota(limit=4, default_ttl_ms=60_000))

    grant = granted(store.acquire(DB))
    assert grant.lease.expires_at_ms == quota3.clock.now_ms() + 60_000
    assert store.status(DB).in_use == 4


def test_a_lowered_limit_is_respected_even_when_expired_leases_are_reclaimed(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    live = [granted(store.acquire(DB, ttl_ms=10 * TTL)) for _ in range(2)]
    store.acquire(DB, ttl_ms=1_000)  # will expire
    store.set_quota(DB, Quota(limit=2, default_ttl_ms=TTL))
    quota3.clock.advance(1_000 + SKEW_MARGIN_MS)  # expired, and may be reclaimed

    assert isinstance(store.acquire(DB), Rejected)
    store.release(DB, live[0].token)
    grant = granted(store.acquire(DB))
    assert store.status(DB).in_use == 2
    assert len(grant.reclaimed) <= 1


def _ops() -> dict[str, Callable[[Any], object]]:
    return {
        "acquire": lambda store: store.acquire("ghost-db"),
        "release": lambda store: store.release("ghost-db", NEVER_GRANTED),
        "renew": lambda store: store.renew("ghost-db", NEVER_GRANTED),
        # A split quota's token names its shard: no shard item is no quota, not a lost lease.
        "release of a shard's grant": lambda store: store.release("ghost-db", NEVER_GRANTED + ".1"),
        "renew of a shard's grant": lambda store: store.renew("ghost-db", NEVER_GRANTED + ".1"),
        "status": lambda store: store.status("ghost-db"),
    }


@pytest.mark.parametrize("operation", list(_ops()))
def test_an_unknown_database_is_a_typed_error_and_writes_nothing(
    quota3: StoreUnderTest, operation: str
) -> None:
    before = quota3.dump()

    with pytest.raises(UnknownDatabase, match=r"ghost-db.*set_quota"):
        _ops()[operation](quota3.store)

    assert quota3.dump() == before


BAD_CALLS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "empty database": ("database", lambda s: s.acquire("")),
    "oversized database": ("database", lambda s: s.acquire("d" * 129)),
    "database with a space": ("database", lambda s: s.status("orders mysql")),
    "database not a string": ("database", lambda s: s.acquire(42)),
    "database starting with a dash": ("database", lambda s: s.acquire("-db")),
    "empty token": ("token", lambda s: s.release(DB, "")),
    "oversized token": ("token", lambda s: s.release(DB, "x" * 65)),
    "token with a short secret": ("token", lambda s: s.renew(DB, "a.1")),
    "token with a fence not a number": ("token", lambda s: s.renew(DB, "s" * 22 + ".x")),
    "token not a string": ("token", lambda s: s.release(DB, None)),
    "short secret": ("secret", lambda s: s.acquire(DB, secret="s" * 15)),
    "secret of 16 random characters": ("secret", lambda s: s.acquire(DB, secret=new_secret()[:16])),
    "made-up secret (issue 23)": (
        "secret",
        lambda s: s.acquire(DB, secret="orders-fn-000042-000043"),
    ),
    "repeated secret": ("secret", lambda s: s.acquire(DB, secret="a" * 22)),
    "oversized secret": ("secret", lambda s: s.acquire(DB, secret="s" * 65)),
    "token proposed as a secret": ("secret", lambda s: s.acquire(DB, secret=NEVER_GRANTED)),
    "secret not a string": ("secret", lambda s: s.acquire(DB, secret=42)),
    "oversized holder": ("holder", lambda s: s.acquire(DB, "h" * 65)),
    "holder with a newline": ("holder", lambda s: s.acquire(DB, "a\nb")),
    "zero ttl": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=0)),
    "negative ttl": ("ttl_ms", lambda s: s.renew(DB, NEVER_GRANTED, ttl_ms=-5)),
    "ttl over a day": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=86_400_001)),
    "ttl as a float": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=1.5)),
    "ttl as a bool": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=True)),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_a_typed_error_naming_the_field_and_writes_nothing(
    quota3: StoreUnderTest, case: str
) -> None:
    field, call = BAD_CALLS[case]
    before, writes = quota3.dump(), quota3.requests()

    with pytest.raises(InvalidInput) as raised:
        call(quota3.store)

    assert raised.value.field == field
    assert quota3.dump() == before
    assert quota3.requests() == writes


@pytest.mark.parametrize(
    ("limit", "ttl", "field"),
    [(-1, TTL, "limit"), (2001, TTL, "limit"), (3, 0, "default_ttl_ms")],
)
def test_a_quota_out_of_range_cannot_be_built(limit: int, ttl: int, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Quota(limit=limit, default_ttl_ms=ttl)
    assert raised.value.field == field


def test_a_quota_of_no_leases_is_refused_and_writes_nothing(quota3: StoreUnderTest) -> None:
    # An item's share may be 0 (a split quota's), a quota a caller sets may not.
    before, writes = quota3.dump(), quota3.requests()

    with pytest.raises(InvalidInput) as raised:
        quota3.store.set_quota(DB, Quota(limit=0, default_ttl_ms=TTL))

    assert raised.value.field == "limit"
    assert quota3.dump() == before
    assert quota3.requests() == writes


def test_a_reclaim_planned_on_a_stale_view_spares_a_lease_its_holder_renewed(
    quota3: StoreUnderTest,
) -> None:
    """A reclaimer whose clock runs ahead must not remove a lease that its holder, on a
    clock just behind, renewed in between: the write is guarded on the expiry it saw."""
    store, clock = quota3.store, quota3.clock
    held = [granted(store.acquire(DB, "fn/slow-clock")) for _ in range(3)]
    clock.advance(TTL)
    plan = plan_acquire(read(store, DB), clock.now_ms())
    assert isinstance(plan, Reclaim)
    clock.advance(-1)  # the holder's clock: its lease is still live
    assert isinstance(store.renew(DB, held[0].token), Renewed)
    clock.advance(1)

    write = store.items.write(DB, reclaim(plan, clock.now_ms()))

    assert not write.applied
    assert held[0].lease.id in {lease.id for lease in store.status(DB).leases}


def test_a_reclaim_planned_before_the_limit_was_raised_and_lowered_again_keeps_the_limit(
    quota3: StoreUnderTest,
) -> None:
    """An acquirer plans a reclaim on a full quota of expired leases; before its write
    lands, the limit is raised, others take the new room, and the limit goes back down.
    The limit the write sees is the one it planned for, but the item now holds more
    entries than the plan allowed: granting would leave more live leases than the limit."""
    store, clock = quota3.store, quota3.clock
    for _ in range(3):
        granted(store.acquire(DB, "crashed/holder"))
    clock.advance(TTL)
    plan = plan_acquire(read(store, DB), clock.now_ms())
    assert isinstance(plan, Reclaim)
    assert (plan.grant, len(plan.victims), plan.limit) == (True, 3, 3)
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL))
    for _ in range(3):
        granted(store.acquire(DB, "fn/while-raised"))
    store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))

    write = store.items.write(DB, reclaim(plan, clock.now_ms()))

    assert not write.applied
    status = store.status(DB)
    assert status.in_use <= status.limit == 3
    assert "late" not in {lease.id for lease in status.leases}


def test_deleting_a_quota_removes_it_and_a_second_delete_says_there_was_none(
    quota3: StoreUnderTest,
) -> None:
    quota3.store.acquire(DB)

    assert quota3.store.delete_quota(DB) is True
    assert quota3.store.delete_quota(DB) is False
    with pytest.raises(UnknownDatabase):
        quota3.store.status(DB)


def test_an_acquire_sent_again_with_its_secret_gets_the_same_lease_fence_and_token(
    quota3: StoreUnderTest,
) -> None:
    secret = new_secret()
    first = granted(quota3.store.acquire(DB, "fn/retry", secret=secret))
    before = quota3.dump_but_note()

    again = granted(quota3.store.acquire(DB, "fn/retry", secret=secret))

    assert again.lease == first.lease
    assert again.lease.fence == first.lease.fence
    assert again.token == first.token
    assert first.lease.id == lease_key(DB, secret)
    assert quota3.store.status(DB).in_use == 1
    assert quota3.dump_but_note() == before


def test_proposing_the_secret_of_another_holders_lease_is_refused_and_changes_nothing(
    quota3: StoreUnderTest,
) -> None:
    secret = new_secret()
    granted(quota3.store.acquire(DB, "fn/first", secret=secret))
    before = quota3.dump()

    with pytest.raises(InvalidInput) as refused:
        quota3.store.acquire(DB, "fn/second", secret=secret)

    assert refused.value.field == "secret"
    assert quota3.dump() == before


def test_its_proposer_gives_a_lease_back_with_the_secret_alone(quota3: StoreUnderTest) -> None:
    """After a lost answer its proposer knows no fence: the secret releases whatever grant
    it holds, and only that one."""
    secret = new_secret()
    granted(quota3.store.acquire(DB, "fn/lost-answer", secret=secret))
    other = granted(quota3.store.acquire(DB, "fn/other"))

    assert quota3.store.release(DB, secret) is ReleaseOutcome.RELEASED
    assert quota3.store.release(DB, secret) is ReleaseOutcome.ALREADY_RELEASED
    assert quota3.store.status(DB).leases == (other.lease,)


def test_an_expired_lease_is_reclaimed_only_a_skew_margin_after_its_expiry(
    quota3: StoreUnderTest,
) -> None:
    """The holder's clock may run behind the reclaimer's: its lease is not taken from it
    until the skew margin past its expiry, and a refused acquirer is told to come back
    then."""
    store, clock = quota3.store, quota3.clock
    first = granted(store.acquire(DB, "fn/short", ttl_ms=1_000)).lease
    held = [granted(store.acquire(DB, "fn/long")).lease for _ in range(2)]
    clock.advance(1_000)  # the first has just expired

    for retry_after_ms in (SKEW_MARGIN_MS, 1):
        before = quota3.dump_but_note()
        refused = store.acquire(DB, "fn/new")
        assert isinstance(refused, Rejected)
        assert refused.retry_after_ms == retry_after_ms
        assert quota3.dump_but_note() == before  # nothing reclaimed
        assert first in store.status(DB).leases
        clock.advance(retry_after_ms - 1)

    clock.advance(1)  # the skew margin past its expiry
    grant = granted(store.acquire(DB, "fn/new"))

    assert grant.reclaimed == (first,)
    assert set(store.status(DB).leases) == {*held, grant.lease}


def test_a_lease_id_is_not_a_token_and_acting_on_it_writes_nothing(
    quota3: StoreUnderTest,
) -> None:
    """Status shows lease ids to anyone who may read it: none of them releases or renews."""
    grant = granted(quota3.store.acquire(DB, "fn/holder"))
    before, writes = quota3.dump(), quota3.requests()

    for act in (
        lambda: quota3.store.release(DB, grant.lease.id),
        lambda: quota3.store.renew(DB, grant.lease.id, ttl_ms=60_000),
    ):
        with pytest.raises(InvalidInput) as refused:
            act()
        assert refused.value.field == "token"

    assert quota3.dump() == before
    assert quota3.requests() == writes
    assert quota3.store.status(DB).leases == (grant.lease,)


def test_a_token_with_another_grants_fence_changes_nothing_and_says_so(
    quota3: StoreUnderTest,
) -> None:
    mine = granted(quota3.store.acquire(DB, "fn/mine"))
    other = granted(quota3.store.acquire(DB, "fn/other"))
    # My secret with the other grant's fence, and with a fence no grant has had yet.
    forged = [
        str(Token(parse_token(mine.token).secret, fence))
        for fence in (other.lease.fence, other.lease.fence + 1)
    ]
    before = quota3.dump()

    for token in forged:
        assert quota3.store.release(DB, token) is ReleaseOutcome.ALREADY_RELEASED
        assert quota3.store.renew(DB, token, ttl_ms=60_000) == LeaseLost(mine.lease.id)

    assert quota3.dump() == before
    assert set(quota3.store.status(DB).leases) == {mine.lease, other.lease}


def test_an_earlier_grants_token_of_a_secret_used_again_changes_nothing_and_says_so(
    quota3: StoreUnderTest,
) -> None:
    """A secret used again (a reused one, a late copy of an async call) gets a new grant:
    a token from its earlier grant is stale and neither releases nor renews the new one."""
    secret = new_secret()
    earlier = granted(quota3.store.acquire(DB, "fn/reused", secret=secret))
    quota3.store.release(DB, earlier.token)
    later = granted(quota3.store.acquire(DB, "fn/reused", secret=secret))
    assert later.lease.id == earlier.lease.id
    assert later.lease.fence > earlier.lease.fence
    assert later.token != earlier.token
    before = quota3.dump()

    assert quota3.store.release(DB, earlier.token) is ReleaseOutcome.ALREADY_RELEASED
    assert quota3.store.renew(DB, earlier.token, ttl_ms=60_000) == LeaseLost(later.lease.id)

    assert quota3.dump() == before
    assert quota3.store.status(DB).leases == (later.lease,)
    assert quota3.store.release(DB, later.token) is ReleaseOutcome.RELEASED


def test_a_renewal_never_shortens_a_lease(quota3: StoreUnderTest) -> None:
    grant = granted(quota3.store.acquire(DB, "fn/long", ttl_ms=20_000))
    quota3.clock.advance(1_000)
    before = quota3.dump()

    shorter = quota3.store.renew(DB, grant.token, ttl_ms=5_000)
    same_end = quota3.store.renew(DB, grant.token, ttl_ms=19_000)

    for renewed in (shorter, same_end):
        assert isinstance(renewed, Renewed)
        assert renewed.lease == grant.lease  # as it was: ends when it did
        assert renewed.remaining == 2
    assert quota3.dump() == before
    assert quota3.store.status(DB).leases == (grant.lease,)

    longer = quota3.store.renew(DB, grant.token, ttl_ms=25_000)
    assert isinstance(longer, Renewed)
    assert longer.lease.expires_at_ms == quota3.clock.now_ms() + 25_000


def test_fences_increase_with_each_grant_in_a_quota(quota3: StoreUnderTest) -> None:
    store, clock = quota3.store, quota3.clock
    secret = new_secret()
    grants = [granted(store.acquire(DB, secret=secret))]
    grants += [granted(store.acquire(DB, ttl_ms=1_000)) for _ in range(2)]
    store.release(DB, grants[0].token)
    grants.append(granted(store.acquire(DB, secret=secret)))  # the same secret again
    clock.advance(1_000 + SKEW_MARGIN_MS)
    reclaiming = granted(store.acquire(DB))  # reclaims both expired leases
    assert len(reclaiming.reclaimed) == 2
    grants.append(reclaiming)

    fences = [grant.lease.fence for grant in grants]
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)
    assert fences[0] >= 1
    assert read(store, DB).fence == fences[-1]
    assert {lease.fence for lease in store.status(DB).leases} == {fences[3], fences[4]}


def test_status_never_shows_a_token_or_a_secret(quota3: StoreUnderTest) -> None:
    secrets = [new_secret() for _ in range(2)]
    grants = [granted(quota3.store.acquire(DB, "fn/holder", secret=s)) for s in secrets]
    grants.append(granted(quota3.store.acquire(DB, "fn/holder")))

    shown = repr(quota3.store.status(DB)) + repr(grants)

    for grant in grants:
        assert grant.token
        assert parse_token(grant.token).secret not in shown
        assert grant.lease.id in shown
    assert not any(secret in shown for secret in secrets)


def test_a_change_read_at_an_earlier_version_is_refused_and_changes_nothing(
    quota3: StoreUnderTest,
) -> None:
    """Of two changes read at one version, one is accepted: the other's accept (its version
    out of date, as a `>=` in place of `=` once let through) writes nothing."""
    store = quota3.store
    seen = read(store, DB)
    assert seen.config is not None
    store.set_quota(DB, Quota(limit=5, default_ttl_ms=TTL))  # accepted: the next version
    before = quota3.dump()

    late = store.items.write(DB, Accept(seen.epoch, replace(seen.config, limit=1), 1))

    assert not late.applied
    assert quota3.dump() == before
    assert store.status(DB).limit == 5


def test_a_quota_deleted_and_made_again_holds_no_lease_and_its_fences_go_on(
    quota3: StoreUnderTest,
) -> None:
    """Deleting takes the leases with the quota; the root that stays keeps the versions and
    the fence, so a grant of the new life never shares a fence with one of the old."""
    store = quota3.store
    old = [granted(store.acquire(DB, "fn/old")) for _ in range(3)]

    assert store.delete_quota(DB) is True
    store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))

    new = [granted(store.acquire(DB, "fn/new")) for _ in range(3)]
    assert store.status(DB).in_use == 3
    assert min(g.lease.fence for g in new) > max(g.lease.fence for g in old)
    for grant in old:
        assert store.release(DB, grant.token) is ReleaseOutcome.ALREADY_RELEASED
