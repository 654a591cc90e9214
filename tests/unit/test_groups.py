"""Groups (domain.groups): fair shares of a quota between functions.

What an operator writes (parse_reservations / format_reservations, Reservation), what
set_quota refuses (and that a refusal writes nothing), and what callers get on the
in-memory store: reserved leases only their group takes, borrowing from the pool, a cap
on all a group holds, release / renew / expiry of every kind of group lease, and how a
change of reservations drains. A shard holds 3 leases here, so that every share of 4 or
more (the pool's, a reservation, a cap) is split over shard items: the rules are checked
through the split path too. The last section keeps bugs found in the groups (and fixed)
from coming back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory import InMemoryLeaseStore
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
from domain.changes import SETTLE_EVERY_MS
from domain.groups import (
    MAX_GROUP_LENGTH,
    MAX_GROUPS,
    TICKET_SLACK_MS,
    GroupStatus,
    Reservation,
    cap_quota,
    format_reservations,
    parse_reservations,
    reserved_quota,
)
from domain.item import QuotaState
from domain.model import MAX_LIMIT, Lease
from domain.tokens import Token, new_secret, parse_token
from tests.fakes import FakeClock, HookedItems
from tests.stores import memory_store

DB = "orders-mysql"
TTL = 60_000
PER_SHARD = 3
# A change left pending (some item held past its share) is settled at most once a second
# (domain.changes.SETTLE_EVERY_MS): a test waits that long before it expects the room left
# by released leases.
REBALANCE_WAIT_MS = 1_000
WRITES = (
    "add",
    "reclaim",
    "remove",
    "extend",
    "note_wanted",
    "seal",
    "write_quota",
    "accept",
    "commit",
    "delete_quota",
)


@pytest.fixture
def store(clock: FakeClock) -> InMemoryLeaseStore:
    return memory_store(clock, seed=1, shard_capacity=PER_SHARD, reclaim_grace_ms=0)


def configure(
    store: InMemoryLeaseStore, limit: int, *groups: Reservation, ttl_ms: int = TTL
) -> None:
    store.set_quota(DB, Quota(limit, ttl_ms), groups)


def take(
    store: InMemoryLeaseStore,
    group: str | None,
    count: int = 1,
    *,
    holder: str = "fn",
    ttl_ms: int | None = None,
) -> list[Granted]:
    grants = []
    for n in range(count):
        result = store.acquire(DB, holder, ttl_ms, group=group)
        assert isinstance(result, Granted), f"acquire #{n + 1} for {group!r}: {result!r}"
        grants.append(result)
    return grants


def refused(store: InMemoryLeaseStore, group: str | None) -> Rejected:
    result = store.acquire(DB, "fn", group=group)
    assert isinstance(result, Rejected), f"{group!r} was granted {result!r}"
    return result


def is_reserved(grant: Granted) -> bool:
    return parse_token(grant.token).reserved


def has_ticket(grant: Granted) -> bool:
    return parse_token(grant.token).ticket is not None


def group_status(store: InMemoryLeaseStore, group: str) -> GroupStatus:
    view = store.status(DB).groups
    assert view is not None, "status shows no groups"
    found = view.group(group)
    assert found is not None, f"status does not show group {group!r}"
    return found


def leases_by_id(store: InMemoryLeaseStore) -> dict[str, Lease]:
    return {lease.id: lease for lease in store.status(DB).leases}


def expiries(store: InMemoryLeaseStore) -> dict[str, int]:
    return {lease.id: lease.expires_at_ms for lease in store.status(DB).leases}


def live_expiries(store: InMemoryLeaseStore) -> dict[str, int]:
    now_ms = store.clock.now_ms()
    return {lease_id: at for lease_id, at in expiries(store).items() if at > now_ms}


def read_item(store: InMemoryLeaseStore, key: str) -> QuotaState:
    """An item as stored; UnknownDatabase if there is none."""
    item = store.items.read(key)
    if item is None:
        raise UnknownDatabase(key)
    return item


def tickets(store: InMemoryLeaseStore, group: str) -> tuple[Lease, ...]:
    """The tickets in a group's cap quota that still count (live)."""
    state = read_item(store, cap_quota(DB, group))
    return state.live(store.clock.now_ms())


def writes(store: InMemoryLeaseStore) -> int:
    return sum(store.requests[operation] for operation in WRITES)


def release_all(store: InMemoryLeaseStore, grants: Iterable[Granted]) -> None:
    for grant in grants:
        assert store.release(DB, grant.token) is ReleaseOutcome.RELEASED


# --- What an operator writes -----------------------------------------------------------


def test_parse_reads_each_group_with_its_options() -> None:
    parsed = parse_reservations(" api=10, batch=0:max=20:borrow ,etl=2:noborrow:max=2,")

    assert parsed == (
        Reservation("api", 10),
        Reservation("batch", 0, borrow=True, max=20),
        Reservation("etl", 2, borrow=False, max=2),
    )


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_of_nothing_is_no_groups(text: str) -> None:
    assert parse_reservations(text) == ()


def test_parse_then_format_gives_the_canonical_text() -> None:
    text = format_reservations(parse_reservations("api=10:borrow, batch=0:max=20,etl=1:noborrow"))

    assert text == "api=10,batch=0:max=20,etl=1:noborrow"


reservations = st.builds(
    Reservation,
    group=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    reserved=st.integers(0, MAX_LIMIT),
    borrow=st.booleans(),
).flatmap(
    lambda r: st.builds(
        Reservation,
        st.just(r.group),
        st.just(r.reserved),
        st.just(r.borrow),
        st.none() | st.integers(r.reserved, MAX_LIMIT),
    )
)


@given(st.lists(reservations, max_size=MAX_GROUPS, unique_by=lambda r: r.group))
def test_format_and_parse_round_trip(written: list[Reservation]) -> None:
    text = format_reservations(written)

    assert parse_reservations(text) == tuple(written)
    assert format_reservations(parse_reservations(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "api",  # no reservation
        "api=",
        "api=x",
        "api=1.5",
        "api=-1",
        f"api={MAX_LIMIT + 1}",
        "api=1:max=",
        "api=1:max=x",
        "api=3:max=2",  # a cap below the reservation
        "api=1:often",  # an unknown option
        "api=1:lend=1000",  # lending is retired (docs/design.md)
        "api=1:borrow=no",
        "a pi=1",
        "api~x=1",  # `~` is the shares' mark
        "=1",
        "x" * (MAX_GROUP_LENGTH + 1) + "=1",
    ],
)
def test_parse_refuses_malformed_text(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_reservations(text)


def test_parse_refuses_what_is_not_text() -> None:
    with pytest.raises(InvalidInput, match="groups"):
        parse_reservations(["api=1"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"reserved": -1}, "api.reserved"),
        ({"reserved": 1.5}, "api.reserved"),
        ({"reserved": True}, "api.reserved"),  # a bool is no count
        ({"reserved": "2"}, "api.reserved"),
        ({"reserved": MAX_LIMIT + 1}, "api.reserved"),
        ({"max": -1}, "api.max"),
        ({"max": 2.0}, "api.max"),
        ({"max": True}, "api.max"),
        ({"reserved": 3, "max": 2}, "api.max"),  # a cap below the reservation
        ({"borrow": "yes"}, "api.borrow"),
        ({"borrow": 1}, "api.borrow"),
    ],
)
def test_a_reservation_refuses_bad_numbers(settings: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Reservation("api", **settings)  # type: ignore[arg-type]

    assert raised.value.field == field


@pytest.mark.parametrize(
    "group", ["", "a b", "a~b", "db#1", "ümlaut", "x" * (MAX_GROUP_LENGTH + 1), 5, None]
)
def test_a_reservation_refuses_a_name_that_is_not_a_group(group: object) -> None:
    with pytest.raises(InvalidInput) as raised:
        Reservation(group)  # type: ignore[arg-type]

    assert raised.value.field == "group"


def test_a_reservation_at_its_bounds_is_accepted_and_says_what_it_may_borrow() -> None:
    assert Reservation("x" * MAX_GROUP_LENGTH, 0, max=0).borrow_cap == 0
    assert Reservation("api", 2, max=2).borrow_cap == 0  # the cap is all reserved
    assert Reservation("api", 2, max=5).borrow_cap == 3
    assert Reservation("api", 2, borrow=False, max=5).borrow_cap == 0
    assert Reservation("api", MAX_LIMIT).borrow_cap is None  # as many as are free


# --- set_quota refuses bad groups, and writes nothing -----------------------------------

BAD_CHANGES = {
    "above the limit": [Reservation("api", 3), Reservation("web", 2)],
    "a group twice": [Reservation("api", 1), Reservation("api", 2)],
    "too many groups": [Reservation(f"fn-{n}", 0) for n in range(MAX_GROUPS + 1)],
}


@pytest.mark.parametrize("groups", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
def test_bad_groups_for_a_new_quota_create_nothing(
    store: InMemoryLeaseStore, groups: list[Reservation]
) -> None:
    with pytest.raises(InvalidInput):
        store.set_quota(DB, Quota(4, TTL), groups)

    assert writes(store) == 0
    for item in (DB, reserved_quota(DB, "api"), reserved_quota(DB, "web")):
        with pytest.raises(UnknownDatabase):
            read_item(store, item)
    with pytest.raises(UnknownDatabase):
        store.status(DB)


@pytest.mark.parametrize("groups", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
def test_bad_groups_for_a_quota_in_use_change_nothing(
    store: InMemoryLeaseStore, groups: list[Reservation]
) -> None:
    configure(store, 4)
    take(store, None, 2)
    before, written = store.status(DB), writes(store)

    with pytest.raises(InvalidInput):
        store.set_quota(DB, Quota(4, TTL), groups)

    assert writes(store) == written
    assert store.status(DB) == before
    assert store.status(DB).groups is None
    for item in (reserved_quota(DB, "api"), reserved_quota(DB, "web")):
        with pytest.raises(UnknownDatabase):
            read_item(store, item)
    # The quota works as before: the two free leases are anyone's.
    take(store, "api", 2)
    refused(store, None)


def test_a_limit_below_the_reservations_is_refused_and_changes_nothing(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 4, max=5))
    take(store, "api", 5)
    before, written = store.status(DB), writes(store)

    with pytest.raises(InvalidInput) as raised:
        store.set_quota(DB, Quota(3, TTL))  # groups=None keeps api's 4 reserved

    assert raised.value.field == "limit"
    assert writes(store) == written
    assert store.status(DB) == before
    assert (before.limit, group_status(store, "api").reserved) == (6, 4)


def test_a_new_group_in_a_refused_change_gets_no_share(store: InMemoryLeaseStore) -> None:
    configure(store, 6, Reservation("api", 2))
    before = store.status(DB)

    with pytest.raises(InvalidInput):
        store.set_quota(DB, Quota(6, TTL), [Reservation("api", 2), Reservation("web", 5)])

    assert store.status(DB) == before
    for item in (reserved_quota(DB, "web"), cap_quota(DB, "web")):
        with pytest.raises(UnknownDatabase):
            read_item(store, item)
    web = store.acquire(DB, "fn", group="web")
    assert isinstance(web, Granted)
    assert not is_reserved(web)  # web is no group: it took the pool


# --- Who gets which lease -------------------------------------------------------------


def test_reserved_leases_never_go_to_other_callers(store: InMemoryLeaseStore) -> None:
    configure(store, 8, Reservation("api", 4))  # api's 4 and the pool's 4: both split
    others = take(store, None, 2) + take(store, "batch", 1) + take(store, "other", 1)

    # The pool is full; api's 4 are free, and stay api's.
    for group in (None, "batch", "other"):
        refused(store, group)
    assert store.status(DB).remaining == 4
    assert group_status(store, "api").remaining_reserved == 4
    assert not any(is_reserved(grant) for grant in others)

    api = take(store, "api", 4)

    assert all(is_reserved(grant) for grant in api)
    assert all(grant.lease.group == "api" and not grant.lease.borrowed for grant in api)
    refused(store, "api")  # it may borrow, but the pool is full
    refused(store, None)
    shown = leases_by_id(store)
    assert {lease_id for lease_id, lease in shown.items() if lease.group == "api"} == {
        grant.lease.id for grant in api
    }
    assert all(shown[grant.lease.id].group == "" for grant in others)
    status = store.status(DB)
    assert (status.in_use, status.limit, status.remaining) == (8, 8, 0)
    assert (group_status(store, "api").reserved_in_use, group_status(store, "api").borrowed) == (
        4,
        0,
    )


def test_a_released_reserved_lease_goes_back_to_its_group_only(store: InMemoryLeaseStore) -> None:
    configure(store, 4, Reservation("api", 1, borrow=False))
    take(store, None, 3)
    (api,) = take(store, "api")
    store.release(DB, api.token)

    refused(store, None)
    refused(store, "batch")
    (again,) = take(store, "api")
    assert is_reserved(again)


def test_a_group_that_may_borrow_takes_the_pool_after_its_reservation(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 2))

    api = take(store, "api", 6)

    assert [is_reserved(grant) for grant in api] == [True] * 2 + [False] * 4
    assert all(grant.lease.borrowed and grant.lease.group == "api" for grant in api[2:])
    assert not any(has_ticket(grant) for grant in api)  # no cap, no tickets
    refused(store, "api")
    refused(store, None)
    api_status = group_status(store, "api")
    assert (api_status.reserved_in_use, api_status.borrowed) == (2, 4)
    view = store.status(DB).groups
    assert view is not None
    assert (view.pool_limit, view.pool_in_use) == (4, 4)
    assert Counter(lease.borrowed for lease in store.status(DB).leases) == {True: 4, False: 2}

    # A reserved lease given back is the group's next grant, before any pool lease.
    store.release(DB, api[0].token)
    store.release(DB, api[2].token)
    (next_one,) = take(store, "api")
    assert is_reserved(next_one)


def test_a_group_that_may_not_borrow_is_refused_once_its_reservation_is_in_use(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 2, borrow=False))
    take(store, "api", 2)

    refused(store, "api")

    assert store.status(DB).remaining == 4  # the pool had room; api may not use it
    assert group_status(store, "api").borrowed == 0
    take(store, None, 4)
    refused(store, None)


def test_max_caps_what_a_group_holds_reserved_and_borrowed_together(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 10, Reservation("api", 2, max=5))  # pool 8, api borrows at most 3

    api = take(store, "api", 5)

    assert [is_reserved(grant) for grant in api] == [True] * 2 + [False] * 3
    assert all(has_ticket(grant) for grant in api[2:])
    refused(store, "api")
    view = store.status(DB).groups
    assert view is not None
    assert (view.pool_limit, view.pool_in_use) == (8, 3)  # the pool had room: the cap held
    assert len(tickets(store, "api")) == 3
    # The rest of the pool is everyone else's.
    take(store, None, 5)
    refused(store, None)
    # A lease given back lets the group take one again, up to its max.
    store.release(DB, api[3].token)
    assert len(tickets(store, "api")) == 2
    (again,) = take(store, "api")
    assert has_ticket(again)
    refused(store, "api")
    assert len(tickets(store, "api")) == 3


def test_a_capped_group_under_its_max_borrows_again_once_the_pool_frees(
    store: InMemoryLeaseStore,
) -> None:
    """A ticket taken for a pool lease that was then refused is given back at once: the
    refusals do not use up the group's cap."""
    configure(store, 6, Reservation("api", 1, max=4))  # pool 5, api borrows at most 3
    others = take(store, None, 4)
    api = take(store, "api", 2)
    assert [is_reserved(grant) for grant in api] == [True, False]

    for _ in range(5):  # the pool is full: each tries, takes a ticket, gives it back
        refused(store, "api")

    assert len(tickets(store, "api")) == 1
    release_all(store, others)
    more = take(store, "api", 2)
    assert not any(is_reserved(grant) for grant in more)
    refused(store, "api")  # at its max of 4, with room left in the pool
    assert store.status(DB).remaining == 2
    api_status = group_status(store, "api")
    assert (api_status.reserved_in_use, api_status.borrowed) == (1, 3)


# --- Release and renew ----------------------------------------------------------------


def test_a_reserved_lease_is_released_once_and_renewed_while_it_lives(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 6, Reservation("api", 4))  # a split share
    first, second = take(store, "api", 2)

    clock.advance(TTL - 1_000)
    renewed = store.renew(DB, first.token)
    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == clock.now_ms() + TTL
    assert renewed.lease.group == "api"
    clock.advance(2_000)  # past the first grant's expiry

    assert live_expiries(store) == {first.lease.id: clock.now_ms() + TTL - 2_000}
    assert group_status(store, "api").reserved_in_use == 1
    assert store.release(DB, first.token) is ReleaseOutcome.RELEASED
    assert store.release(DB, first.token) is ReleaseOutcome.ALREADY_RELEASED
    assert isinstance(store.renew(DB, first.token), LeaseLost)
    assert isinstance(store.renew(DB, second.token), LeaseLost)  # it expired
    assert store.status(DB).in_use == 0


def test_a_borrowed_lease_and_its_ticket_are_renewed_and_released_together(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 6, Reservation("api", 1, max=3))
    reserved, borrowed = take(store, "api", 2)
    assert has_ticket(borrowed)

    clock.advance(TTL - 1_000)
    renewed = store.renew(DB, borrowed.token, 20_000)
    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == clock.now_ms() + 20_000
    assert (renewed.lease.group, renewed.lease.borrowed) == ("api", True)
    (ticket,) = tickets(store, "api")
    assert ticket.expires_at_ms >= renewed.lease.expires_at_ms  # the cap counts it throughout
    clock.advance(5_000)  # past both grants' first expiry

    assert list(live_expiries(store)) == [borrowed.lease.id]
    assert len(tickets(store, "api")) == 1
    assert store.release(DB, borrowed.token) is ReleaseOutcome.RELEASED
    assert tickets(store, "api") == ()
    assert store.release(DB, borrowed.token) is ReleaseOutcome.ALREADY_RELEASED
    assert isinstance(store.renew(DB, borrowed.token), LeaseLost)
    assert isinstance(store.renew(DB, reserved.token), LeaseLost)
    # Its cap is whole again: up to its max of 3.
    assert [is_reserved(grant) for grant in take(store, "api", 3)] == [True, False, False]
    refused(store, "api")


def test_a_group_token_acts_on_its_own_lease_only(store: InMemoryLeaseStore) -> None:
    configure(store, 8, Reservation("api", 2, max=4), Reservation("batch", 1))
    mine, theirs, borrowed, their_borrowed = take(store, "api", 4)
    take(store, "batch")
    assert [is_reserved(grant) for grant in (mine, theirs, borrowed, their_borrowed)] == [
        True,
        True,
        False,
        False,
    ]
    own = parse_token(mine.token)
    other = parse_token(theirs.token)
    their_ticket = parse_token(their_borrowed.token).ticket
    assert their_ticket is not None
    forged = [
        # My secret with their grant's fence, in the same share.
        str(Token(own.secret, other.fence, other.shard, "api", reserved=True)),
        # My lease's token as if the lease were in the pool, or in batch's share.
        str(Token(own.secret, own.fence, own.shard)),
        str(Token(own.secret, own.fence, own.shard, "batch", reserved=True)),
        # My reserved lease's secret as a borrowed lease with their ticket's fence.
        str(Token(own.secret, own.fence, own.shard, "api", ticket=their_ticket)),
    ]
    before = expiries(store)
    tickets_before = tickets(store, "api")

    for token in forged:
        assert store.release(DB, token) is ReleaseOutcome.ALREADY_RELEASED, token
        assert isinstance(store.renew(DB, token, 30_000), LeaseLost)

    assert expiries(store) == before
    assert tickets(store, "api") == tickets_before
    # My borrowed lease's token, its ticket's fence swapped for theirs: my lease goes, and
    # their ticket stays (so their lease still counts against the cap).
    mixed = parse_token(borrowed.token)
    swapped = str(Token(mixed.secret, mixed.fence, mixed.shard, "api", ticket=their_ticket))
    assert store.release(DB, swapped) is ReleaseOutcome.RELEASED
    assert their_ticket.fence in {ticket.fence for ticket in tickets(store, "api")}
    assert set(expiries(store)) == set(before) - {borrowed.lease.id}
    # Releasing mine leaves theirs.
    assert store.release(DB, mine.token) is ReleaseOutcome.RELEASED
    assert set(expiries(store)) == set(before) - {borrowed.lease.id, mine.lease.id}
    assert isinstance(store.renew(DB, theirs.token), Renewed)


# --- Changing the reservations --------------------------------------------------------


def test_lowering_a_reservation_keeps_the_leases_held_past_it_and_grants_none_beyond(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 8, Reservation("api", 4, borrow=False))
    api = take(store, "api", 4)

    configure(store, 8, Reservation("api", 2, borrow=False))

    api_status = group_status(store, "api")
    assert (api_status.reserved, api_status.reserved_in_use) == (2, 4)
    assert isinstance(store.renew(DB, api[0].token), Renewed)  # held leases stay good
    refused(store, "api")
    release_all(store, api[:2])
    clock.advance(REBALANCE_WAIT_MS)
    refused(store, "api")  # 2 held, of 2
    release_all(store, api[2:3])
    clock.advance(REBALANCE_WAIT_MS)
    (again,) = take(store, "api")
    assert is_reserved(again)
    clock.advance(REBALANCE_WAIT_MS)
    refused(store, "api")
    assert group_status(store, "api").reserved_in_use == 2


def test_raising_a_reservation_gives_the_group_more_leases_only_it_may_take(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 8, Reservation("api", 1))
    take(store, "api")

    configure(store, 8, Reservation("api", 4))

    more = take(store, "api", 3)
    assert all(is_reserved(grant) for grant in more)
    take(store, None, 4)  # the pool is 8 - 4
    refused(store, None)
    refused(store, "batch")
    api_status = group_status(store, "api")
    assert (api_status.reserved, api_status.reserved_in_use, api_status.borrowed) == (4, 4, 0)


def test_a_removed_group_keeps_its_leases_until_released_and_then_takes_the_pool(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 2, max=3))
    reserved_leases = take(store, "api", 3)
    borrowed = reserved_leases.pop()

    configure(store, 6)  # no groups: api's reservation and cap are gone

    api_status = group_status(store, "api")
    assert api_status.retired
    assert (api_status.reserved, api_status.reserved_in_use, api_status.borrowed) == (0, 2, 1)
    for grant in [*reserved_leases, borrowed]:
        assert isinstance(store.renew(DB, grant.token), Renewed)
    # api is no group any more: it takes the pool, past its old max, as anyone does.
    pool = take(store, "api", 2)
    assert not any(is_reserved(grant) or has_ticket(grant) for grant in pool)
    assert all(not grant.lease.borrowed for grant in pool)
    release_all(store, [*reserved_leases, borrowed])
    assert store.release(DB, reserved_leases[0].token) is ReleaseOutcome.ALREADY_RELEASED
    assert group_status(store, "api").reserved_in_use == 0


def test_a_retired_group_is_forgotten_once_its_leases_are_released(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 2, max=4), Reservation("batch", 1))
    api = take(store, "api", 3)
    configure(store, 6, Reservation("batch", 1))

    configure(store, 6, Reservation("batch", 1))  # a later change: api still holds leases
    assert group_status(store, "api").retired
    read_item(store, reserved_quota(DB, "api"))  # still there

    release_all(store, api)
    configure(store, 6, Reservation("batch", 1))

    view = store.status(DB).groups
    assert view is not None
    assert [group.group for group in view.groups] == ["batch"]
    for item in (reserved_quota(DB, "api"), cap_quota(DB, "api")):
        with pytest.raises(UnknownDatabase):
            read_item(store, item)
    # The name may come back as a new group.
    configure(store, 6, Reservation("batch", 1), Reservation("api", 1, borrow=False))
    (again,) = take(store, "api")
    assert is_reserved(again)
    refused(store, "api")


def test_a_group_named_again_before_it_is_forgotten_gets_its_leases_back(
    store: InMemoryLeaseStore,
) -> None:
    configure(store, 6, Reservation("api", 2, borrow=False))
    held = take(store, "api", 2)
    configure(store, 6)

    configure(store, 6, Reservation("api", 3, borrow=False))

    api_status = group_status(store, "api")
    assert not api_status.retired
    assert (api_status.reserved, api_status.reserved_in_use) == (3, 2)
    take(store, "api")
    refused(store, "api")
    release_all(store, held)


# --- Status ---------------------------------------------------------------------------


def test_status_counts_each_groups_reserved_and_borrowed_leases(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 10, Reservation("api", 2, max=5), Reservation("batch", 3, borrow=False))
    take(store, "api", 4)
    take(store, "batch", 2)
    take(store, None, 2)

    status = store.status(DB)

    assert (status.limit, status.in_use, status.remaining) == (10, 8, 2)
    assert status.groups is not None
    assert (status.groups.pool_limit, status.groups.pool_in_use) == (5, 4)
    api, batch = group_status(store, "api"), group_status(store, "batch")
    assert (api.reserved, api.max, api.reserved_in_use, api.borrowed) == (2, 5, 2, 2)
    assert (api.remaining_reserved, batch.remaining_reserved) == (0, 1)
    assert (batch.borrow, batch.reserved_in_use, batch.borrowed) == (False, 2, 0)
    assert Counter((lease.group, lease.borrowed) for lease in status.leases) == {
        ("api", False): 2,
        ("api", True): 2,
        ("batch", False): 2,
        ("", False): 2,
    }

    clock.advance(TTL)
    status = store.status(DB)
    assert (status.in_use, status.expired, status.remaining) == (0, 8, 10)
    api, batch = group_status(store, "api"), group_status(store, "batch")
    assert (api.reserved_in_use, api.borrowed, batch.reserved_in_use) == (0, 0, 0)


# --- Expiry ---------------------------------------------------------------------------


def test_expired_reserved_leases_are_reclaimed_for_their_group_only(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 8, Reservation("api", 4, borrow=False))  # a split share
    dead = take(store, "api", 4, ttl_ms=1_000)
    take(store, None, 4)
    clock.advance(1_000)

    refused(store, None)  # the expired reserved leases are not the pool's
    assert group_status(store, "api").reserved_in_use == 0
    assert store.status(DB).expired == 4
    fresh = take(store, "api", 4)

    reclaimed = {lease.id for grant in fresh for lease in grant.reclaimed}
    assert reclaimed == {grant.lease.id for grant in dead}
    assert store.status(DB).expired == 0
    refused(store, "api")
    assert isinstance(store.renew(DB, dead[0].token), LeaseLost)
    assert store.release(DB, dead[0].token) is ReleaseOutcome.ALREADY_RELEASED


def test_an_expired_borrowed_lease_stops_counting_against_the_cap(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    configure(store, 4, Reservation("api", 0, max=1))
    (borrowed,) = take(store, "api", ttl_ms=1_000)
    refused(store, "api")

    clock.advance(1_000 + TICKET_SLACK_MS)  # the lease, then its ticket, has run out

    (again,) = take(store, "api")
    assert again.lease.borrowed
    refused(store, "api")
    # The old grant's token touches neither the new lease nor its ticket.
    assert isinstance(store.renew(DB, borrowed.token), LeaseLost)
    store.release(DB, borrowed.token)
    assert again.lease.id in expiries(store)
    assert len(tickets(store, "api")) == 1
    refused(store, "api")


# --- Changes that once broke the rules (regressions) -------------------------------


@pytest.mark.parametrize(
    ("before", "after", "asks_as"),
    [
        pytest.param(Reservation("api", 2), Reservation("api", 0), None, id="lowered"),
        pytest.param(Reservation("api", 0), Reservation("api", 2), "api", id="raised"),
    ],
)
def test_changing_a_reservation_never_lets_live_leases_pass_the_limit(
    store: InMemoryLeaseStore,
    clock: FakeClock,
    before: Reservation,
    after: Reservation,
    asks_as: str | None,
) -> None:
    """Lowered: api's 2 reserved leases are held past its new share of 0, and the pool's
    new room (4) must count them. Raised: the pool holds 4 (api's 2 borrowed and 2
    others'), past its new share of 2, and api's new reservation must count them. The
    limit stays 4 throughout."""
    configure(store, 4, before)
    api = take(store, "api", 2)
    others = take(store, None, 2)

    configure(store, 4, after)
    for _ in range(4):
        store.acquire(DB, "fn", group=asks_as)
        clock.advance(SETTLE_EVERY_MS)  # a refused acquirer may settle the change

    assert store.status(DB).in_use == 4
    # Once the leases held over drain, the room comes back to the ones now entitled.
    release_all(store, api + others)
    clock.advance(SETTLE_EVERY_MS)
    again = take(store, asks_as, 4)
    if asks_as == "api":
        assert sum(is_reserved(grant) for grant in again) == 2
    refused(store, asks_as)
    assert store.status(DB).in_use == 4


def test_a_forgotten_groups_borrowed_leases_are_never_counted_as_another_groups(
    store: InMemoryLeaseStore,
) -> None:
    """A new group must not be given the tag a forgotten group's pool leases still carry."""
    configure(store, 6, Reservation("api", 0))
    (borrowed,) = take(store, "api")  # a pool lease tagged as api's
    configure(store, 6)  # api retired (kept while its borrowed pool lease lives)
    configure(store, 6, Reservation("batch", 1))

    assert group_status(store, "batch").borrowed == 0
    assert leases_by_id(store)[borrowed.lease.id].group != "batch"
    (batch,) = take(store, "batch", 2)[1:]
    assert batch.lease.borrowed
    assert group_status(store, "batch").borrowed == 1


def test_a_forgotten_groups_tag_is_not_given_again_after_a_change_that_names_no_group(
    store: InMemoryLeaseStore,
) -> None:
    """A second change naming no group found the groups record empty and dropped it, its
    last tag with it: a group named later took the forgotten one's tag, its live pool
    leases counted as the new group's (and given back at renewal, the group not borrowing)."""
    configure(store, 6, Reservation("api", 0))
    (borrowed,) = take(store, "api")  # a pool lease tagged as api's
    configure(store, 6)  # api retired (kept while its borrowed pool lease lives)
    configure(store, 6)  # no group named: the record keeps the last tag
    configure(store, 6, Reservation("batch", 0, borrow=False))

    assert group_status(store, "batch").borrowed == 0
    assert leases_by_id(store)[borrowed.lease.id].group != "batch"
    assert isinstance(store.renew(DB, borrowed.token), Renewed)


def test_a_retired_group_is_kept_while_its_borrowed_leases_live(
    store: InMemoryLeaseStore,
) -> None:
    """Forgotten while its borrowed pool leases lived, a group named again got a new tag,
    those leases were no longer counted, and it held past its new max (5 live, max 2)."""
    configure(store, 6, Reservation("batch", 0))  # borrows, no cap
    held = take(store, "batch", 3)
    configure(store, 6)  # retired; its share and cap hold nothing, its borrowed leases live

    assert group_status(store, "batch").retired
    configure(store, 6, Reservation("batch", 0, max=2))  # named again, capped at 2

    assert group_status(store, "batch").borrowed == 3
    refused(store, "batch")
    release_all(store, held)
    configure(store, 6)  # nothing borrowed lives now: forgotten
    view = store.status(DB).groups
    assert view is None or "batch" not in [group.group for group in view.groups]


def test_a_retired_group_whose_leases_expired_is_forgotten(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """A holder that vanished without releasing leaves an expired entry nobody reclaims
    (nobody acquires in a retired share): it must not keep the group listed for ever."""
    configure(store, 6, Reservation("api", 2, max=4))
    take(store, "api", 3, ttl_ms=1_000)  # 2 reserved, 1 borrowed; their holders vanish
    configure(store, 6)
    clock.advance(10_000)

    configure(store, 6)

    assert store.status(DB).groups is None
    for item in (reserved_quota(DB, "api"), cap_quota(DB, "api")):
        with pytest.raises(UnknownDatabase):
            read_item(store, item)


@pytest.mark.parametrize("operation", ["release", "renew"])
def test_a_token_of_a_forgotten_groups_lease_is_already_released(
    store: InMemoryLeaseStore, operation: str
) -> None:
    """A repeated release (or a renew) once the lease's group is forgotten, its share
    deleted, says the lease is gone rather than that the database is unknown."""
    configure(store, 6, Reservation("api", 2))
    (grant,) = take(store, "api")
    release_all(store, [grant])
    configure(store, 6)  # api retired, and forgotten: it held nothing
    with pytest.raises(UnknownDatabase):
        read_item(store, reserved_quota(DB, "api"))

    if operation == "release":
        assert store.release(DB, grant.token) is ReleaseOutcome.ALREADY_RELEASED
    else:
        assert isinstance(store.renew(DB, grant.token), LeaseLost)
    # A quota that is really gone still says so.
    store.delete_quota(DB)
    with pytest.raises(UnknownDatabase):
        store.release(DB, grant.token)


def test_releasing_a_borrowed_lease_by_its_secret_alone_gives_its_ticket_back(
    store: InMemoryLeaseStore,
) -> None:
    """The documented way to give back a lease whose grant was never heard of (after a
    StoreUnavailable, with a proposed secret) is release(database, secret); the ticket
    once stayed, holding the group's cap until its TTL."""
    configure(store, 4, Reservation("api", 0, max=1))
    secret = new_secret()
    granted = store.acquire(DB, "fn", secret=secret, group="api")
    assert isinstance(granted, Granted)
    assert granted.lease.borrowed

    assert store.release(DB, secret) is ReleaseOutcome.RELEASED

    assert store.status(DB).in_use == 0
    assert tickets(store, "api") == ()
    (again,) = take(store, "api")  # the group's cap of 1 is free again
    assert again.lease.borrowed


@pytest.mark.parametrize("limit", [4, 3 * PER_SHARD + 1], ids=["one item", "split"])
def test_a_renewal_of_a_borrowed_lease_with_its_ticket_stripped_gives_the_ticket_back(
    store: InMemoryLeaseStore, limit: int
) -> None:
    """Issue 23: a renewal by the token without its ticket (`S.F`, a plain pool lease's)
    lost the lease, as an untracked lease of a capped group, but left its ticket for the
    TTL and a second, about 31 s in which the group's own borrowing was refused."""
    configure(store, limit, Reservation("api", 0, max=1))
    (borrowed,) = take(store, "api")
    grant = parse_token(borrowed.token)
    assert grant.ticket is not None
    stripped = str(replace(grant, group=None, ticket=None))

    assert isinstance(store.renew(DB, stripped), LeaseLost)

    assert store.status(DB).in_use == 0
    assert tickets(store, "api") == ()
    (again,) = take(store, "api")  # the group's cap of 1 is free again
    assert again.lease.borrowed


def test_a_raised_reservation_is_taken_before_the_pool_once_the_pool_drains(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """A change that holds api's new reservation down (the pool held past its new share)
    once settled only when an acquire ended refused: api, which may borrow, was granted
    pool leases instead, and its reservation stayed idle."""
    configure(store, 4)
    others = take(store, None, 4)
    configure(store, 4, Reservation("api", 2))  # the pool holds 4, past its new 2
    release_all(store, others)
    clock.advance(SETTLE_EVERY_MS)

    (first,) = take(store, "api")

    assert is_reserved(first), f"api borrowed with {group_status(store, 'api')}"


def test_forgetting_a_group_in_a_change_that_holds_the_pool_down_does_not_lose_the_room(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """The change both holds the pool down (api keeps a lease past its new share) and
    forgets batch: forgetting once wrote the groups back without `pending`, and the pool
    stayed held down for good."""
    configure(store, 4, Reservation("api", 1), Reservation("batch", 0))
    (api,) = take(store, "api")

    # api is retired with a lease held past its new share of 0; batch, empty, is forgotten.
    configure(store, 4)
    release_all(store, [api])
    clock.advance(TTL)  # long after: anything pending has had every chance to settle

    take(store, None, 4)
    status = store.status(DB)
    assert (status.in_use, status.limit) == (4, 4)


def test_a_change_of_groups_that_loses_a_race_is_retried_on_what_won(clock: FakeClock) -> None:
    """Another operator's change lands between this one's reading the quota and writing it:
    set_quota once returned as if done, its reservation not applied and the pool lowered to
    the lost plan's share. The change that lost reads again and applies on top of the one
    that won (or says it could not, retryable); neither is half applied."""
    race = [True]

    def competing(operation: str, applied: bool) -> None:
        if operation == "accept" and not applied and race[0]:
            race[0] = False
            other.set_quota(DB, Quota(5, TTL), [Reservation("api", 2), Reservation("web", 1)])

    items = HookedItems(competing)
    store = memory_store(clock, items=items, seed=1)
    other = memory_store(clock, items=items, seed=2)

    configure(store, 4, Reservation("api", 1))
    race[0] = True

    configure(store, 4, Reservation("api", 3))

    assert race == [False]
    status = store.status(DB)
    assert status.limit == 4
    assert group_status(store, "api").reserved == 3
    assert status.groups is not None
    assert [view.group for view in status.groups.groups if not view.retired] == ["api"]


def test_a_lowered_limit_holds_new_grants_back_until_live_leases_are_under_it(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """A quota without groups holds every grant back while live leases pass a lowered
    limit; plan_limits once held down only shares with room at the change, so api's full
    share granted again as soon as its lease ended (4 live on a limit of 2)."""
    configure(store, 4, Reservation("api", 1, borrow=False))
    (api,) = take(store, "api")
    take(store, None, 3)
    configure(store, 2, Reservation("api", 1, borrow=False))  # 4 held, on a limit of 2
    release_all(store, [api])
    clock.advance(SETTLE_EVERY_MS)

    refused(store, "api")  # 3 still live, on a limit of 2

    assert store.status(DB).in_use == 3


def test_a_limit_set_after_the_last_group_is_forgotten_stays_set(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """Once every group was forgotten, a stale `pending` left in the root was settled by
    the next refused acquire with the old limit, putting the operator's new one back."""
    configure(store, 3, Reservation("api", 0))
    others = take(store, None, 3)
    configure(store, 2)  # api forgotten; the pool holds 3 past the new limit of 2
    assert store.set_quota(DB, Quota(3, TTL)).limit == 3  # raised again, groups=None

    clock.advance(SETTLE_EVERY_MS)
    refused(store, None)  # 3 of 3

    assert store.status(DB).limit == 3
    release_all(store, others)
    take(store, None, 3)


def test_a_held_down_pool_settles_for_plain_callers_while_status_is_watched(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """Callers of no group once learned of a pending change only when their cached split
    layout ran out, which status() kept fresh: the pool stayed held down for them."""
    configure(store, 5, Reservation("api", 1))  # the pool: 4, over 2 shards
    (api,) = take(store, "api")
    configure(store, 5)  # api's lease is held past its new share of 0: the pool held at 4
    release_all(store, [api])
    take(store, None, 4)

    granted = False
    for _ in range(8):  # a dashboard reads status every second
        clock.advance(SETTLE_EVERY_MS)
        store.status(DB)
        granted = isinstance(store.acquire(DB, "fn"), Granted)
        if granted:
            break

    assert granted, "the fifth lease of a limit of 5, nothing held over, never came"
