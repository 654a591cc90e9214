"""Groups' invariants over random interleavings, checked against a model on both stores.

Callers acquire as `api`, `batch` (groups the quota may name), `other` (never named) or as
no group; they release and renew (with their own tokens, with a secret alone, and with
tokens that mix their secret with another grant's fence), time passes, and an operator
changes the limit and the reservations (raises, lowers, removes, caps). After every
step, status must match the model lease for lease, and:

- G1 live leases never pass the limit: no grant takes them past the limit in effect
  (a lowered limit holds grants back until they drain below it); at most the largest
  limit in effect since the oldest of them was granted, and at most the limit once every
  live lease was granted under it;
- G2 a group never holds more reserved leases than the largest reservation it had since
  the oldest of them was granted, the pool never more than its largest limit, and a
  capped group never borrows more than its largest cap (max - reserved) in that window;
- G3 a reserved lease (status: `group == g`, not borrowed) was granted to an acquire
  that asked as `g`, and only when `g` had a reservation; a borrowed lease to one that
  asked as `g` when `g` could borrow; status counts each group's leases as the model does;
- G4 a release or renew acts on its own token's lease only; a token that is not its
  grant's changes nothing.

On one item per share (no shards) the model also knows when a grant is due: an acquire
is refused only when the share it may use is full (the reservation, then the pool and
the group's tickets, each counting a lease until a skew margin past its expiry), except
while a change of groups holds shares down until the leases held past theirs drain.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.dynamodb import DynamoDBLeaseStore
from adapters.memory import InMemoryItems, InMemoryLeaseStore
from domain import AcquireResult, Granted, LeaseLost, Quota, Rejected, ReleaseOutcome, Renewed
from domain.changes import SETTLE_EVERY_MS
from domain.groups import TICKET_SLACK_MS, Reservation
from domain.item import Grant as GrantWrite
from domain.item import ItemWrite, apply_write
from domain.lease_store import LeaseStore
from domain.model import SKEW_MARGIN_MS, QuotaStatus
from domain.ports import Written
from domain.tokens import Token, parse_token
from tests.fakes import FakeClock

TTL = 10_000
TTLS = st.sampled_from([None, 500, 5_000, 20_000])
GROUPS = ("api", "batch")
CALLERS = st.sampled_from(["api", "batch", "other", None])
PER_SHARD = 3  # the split machines' shard size: a limit or share of 4 or more is split
FIRST = (4, (Reservation("api", 1),))


@st.composite
def reservation_changes(draw: st.DrawFn) -> tuple[int, tuple[Reservation, ...]]:
    """A new limit and reservations within it: any of the groups, each reserved 0-3, with
    or without borrowing and a max."""
    limit = draw(st.integers(2, 7))
    named = []
    for group in draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=2)):
        reserved = draw(st.integers(0, 3))
        cap = draw(st.none() | st.integers(0, 3))
        named.append(
            Reservation(
                group, reserved, draw(st.booleans()), None if cap is None else reserved + cap
            )
        )
    assume(sum(reservation.reserved for reservation in named) <= limit)
    return limit, tuple(named)


def listed_in(status: QuotaStatus) -> set[str]:
    """The groups a status lists (retired ones too, until they are forgotten)."""
    return set() if status.groups is None else {group.group for group in status.groups.groups}


@dataclass
class Grant:
    """A grant as the model keeps it, for good: its lease id, its token (the holder's),
    who asked (a group or None), what it is, and the configuration it was granted under."""

    lease_id: str
    token: str
    asked: str | None
    kind: str  # "reserved" (the group's share), "borrowed" (the pool, tagged) or "pool"
    epoch: int
    ticketed: bool = False
    incarnation: int = 0  # of its group: a group forgotten and named again is a new one


@dataclass(frozen=True)
class Config:
    limit: int
    rules: dict[str, Reservation] = field(default_factory=dict)

    @property
    def pool_limit(self) -> int:
        return self.limit - sum(rule.reserved for rule in self.rules.values())

    def reserved(self, group: str) -> int:
        rule = self.rules.get(group)
        return 0 if rule is None else rule.reserved

    def cap(self, group: str) -> int | None:
        """What `group` may borrow (None: anything free); an unnamed group borrows nothing."""
        rule = self.rules.get(group)
        return 0 if rule is None else rule.borrow_cap


class GroupMachine(RuleBasedStateMachine):
    grants = Bundle("grants")

    # Set per store by machine_for.
    split = False

    def __init__(self, make: Callable[[FakeClock], LeaseStore]) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = make(self.clock)
        self.db = f"db-{uuid.uuid4().hex[:10]}"
        limit, named = FIRST
        self.store.set_quota(self.db, Quota(limit, TTL), named)
        self.configs = [Config(limit, {rule.group: rule for rule in named})]
        # Bumped when status stops listing a group: it was forgotten.
        self.incarnation = dict.fromkeys(GROUPS, 0)
        self.listed = {rule.group for rule in named}  # the groups status last listed
        self.step = "the quota was set"  # what the last step did, for the invariants
        self.entries: dict[str, int] = {}  # what the store holds: lease id -> expiry
        self.granted: dict[str, Grant] = {}  # every grant ever, by lease id
        self.tickets: dict[str, int] = {}  # a ticketed lease's id -> its ticket's expiry

    # --- the model ---------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.configs[-1]

    @property
    def epoch(self) -> int:
        return len(self.configs) - 1

    def now(self) -> int:
        return self.clock.now_ms()

    def live(self, which: Callable[[Grant], bool] = lambda _grant: True) -> list[Grant]:
        now = self.now()
        return [
            self.granted[lease_id]
            for lease_id, expiry in self.entries.items()
            if expiry > now and which(self.granted[lease_id])
        ]

    def held(self, which: Callable[[Grant], bool]) -> int:
        """Entries that count against their share: live, or within the skew margin."""
        since = self.now() - SKEW_MARGIN_MS
        return sum(
            1
            for lease_id, expiry in self.entries.items()
            if expiry > since and which(self.granted[lease_id])
        )

    def held_tickets(self, group: str) -> int:
        since = self.now() - SKEW_MARGIN_MS
        return sum(
            1
            for lease_id, expiry in self.tickets.items()
            if expiry > since and self.granted[lease_id].asked == group
        )

    @staticmethod
    def reserved_of(group: str) -> Callable[[Grant], bool]:
        return lambda grant: grant.kind == "reserved" and grant.asked == group

    @staticmethod
    def borrowed_of(group: str, incarnation: int | None = None) -> Callable[[Grant], bool]:
        """A group's borrowed leases (of one incarnation of it, or of any)."""
        return lambda grant: (
            grant.kind == "borrowed"
            and grant.asked == group
            and incarnation in (None, grant.incarnation)
        )

    @staticmethod
    def in_pool(grant: Grant) -> bool:
        return grant.kind != "reserved"

    def since(self, grants: Iterable[Grant]) -> list[Config]:
        """The configurations in effect since the oldest of `grants` was granted."""
        oldest = min((grant.epoch for grant in grants), default=self.epoch)
        return self.configs[oldest:]

    def ttl_of(self, ttl: int | None) -> int:
        return TTL if ttl is None else ttl

    def stored(self) -> tuple[QuotaStatus, dict[str, int]]:
        status = self.store.status(self.db)
        return status, {lease.id: lease.expires_at_ms for lease in status.leases}

    def pending(self) -> bool:
        """A change of groups holds some shares below their targets until the shares held
        past theirs drain (domain.groups.plan_limits): what is due is then less."""
        root = self.store.items.read(self.db)
        return root is not None and root.config is not None and root.config.pending

    def sync(self, broken: str) -> QuotaStatus:
        """Status must hold every entry the model holds that still counts, as the model
        has it, and nothing else; an entry past its skew margin may have been reclaimed by
        any acquire (a refused one too: its share, its tickets) or a re-share."""
        status, stored = self.stored()
        since = self.now() - SKEW_MARGIN_MS
        for lease_id, expiry in stored.items():
            assert self.entries.get(lease_id) == expiry, f"{broken}: {lease_id} {expiry}"
        for lease_id, expiry in list(self.entries.items()):
            if lease_id not in stored:
                assert expiry <= since, f"{broken}: {lease_id} gone within its margin"
                del self.entries[lease_id]
        for lease_id, expiry in list(self.tickets.items()):
            if expiry <= since:
                del self.tickets[lease_id]  # it no longer counts, whether reclaimed or not
        return status

    # --- rules -------------------------------------------------------------------------

    @rule(target=grants, asked=CALLERS, ttl=TTLS)
    def acquire(self, asked: str | None, ttl: int | None) -> object:
        config = self.config
        pending = self.pending()
        expected = None if self.split else self.due(asked, pending=pending)
        result = self.store.acquire(self.db, "machine", ttl, group=asked)

        event(f"acquire as {asked}: {type(result).__name__}, {expected} was due")
        if not isinstance(result, Granted):
            if expected is not None and not pending:  # pending: a share may be held down
                assert expected == "refused", f"refused; {expected} was due"
            self.step = "a refused acquire changed a lease"
            return multiple()
        token = parse_token(result.token)
        lease = result.lease
        kind = "reserved" if token.reserved else "borrowed" if lease.borrowed else "pool"
        if expected is not None:
            assert kind in expected.split("|"), f"granted {kind}; {expected} was due"
        rule_now = config.rules.get(asked) if asked is not None else None
        # G3: what a grant is follows from who asked and the rules now.
        if kind == "reserved":
            assert rule_now is not None, "reserved for a non-group"
            assert rule_now.reserved > 0, "reserved for a group without a reservation"
            assert (token.group, lease.group) == (asked, asked)
        elif kind == "borrowed":
            assert rule_now is not None, "borrowed by a non-group"
            assert rule_now.borrow, "borrowed by a group that may not"
            assert lease.group == asked
            # A capped group's token names its ticket (and group); an uncapped one's neither.
            ticketed = rule_now.borrow_cap is not None
            assert (token.ticket is not None, token.group) == (
                ticketed,
                asked if ticketed else None,
            )
        else:
            assert rule_now is None, f"{asked} is a group but took a plain pool lease"
            assert token.group is None
            assert not lease.group
        assert lease.expires_at_ms == self.now() + self.ttl_of(ttl)
        assert lease.id not in self.granted, "a grant reused a lease id"
        self.forget_reclaimed(result)
        grant = Grant(
            lease.id,
            result.token,
            asked,
            kind,
            self.epoch,
            ticketed=token.ticket is not None,
            incarnation=self.incarnation.get(asked or "", 0),
        )
        self.add(grant, lease.expires_at_ms)
        self.step = "an acquire changed another lease"
        self.check_grant(grant, config)
        return grant

    def forget_reclaimed(self, result: Granted) -> None:
        since = self.now() - SKEW_MARGIN_MS
        for victim in result.reclaimed:
            assert self.entries.get(victim.id) == victim.expires_at_ms, "reclaimed unknown"
            assert victim.expires_at_ms <= since, "reclaimed a lease within its skew margin"
            del self.entries[victim.id]

    def add(self, grant: Grant, expiry: int) -> None:
        self.granted[grant.lease_id] = grant
        self.entries[grant.lease_id] = expiry
        if grant.ticketed:
            self.tickets[grant.lease_id] = expiry + TICKET_SLACK_MS

    def due(self, asked: str | None, *, pending: bool) -> str:
        """What an acquire must get on one item per share, as `kind|kind`: the group's
        reservation while it has room, else the pool if it may borrow and its tickets and
        the pool have room; anyone else the pool, if it has room.

        While a change is pending, shares may be held below their targets: a refusal may
        then come where a grant is due (unless the refused acquirer settles the change),
        and a group whose reservation is held down may borrow instead."""
        rule_now = self.config.rules.get(asked) if asked is not None else None
        pool_room = self.held(self.in_pool) < self.config.pool_limit
        if rule_now is None:
            return "pool" if pool_room else "refused"
        assert asked is not None
        cap = rule_now.borrow_cap
        may_borrow = cap != 0 and pool_room and (cap is None or self.held_tickets(asked) < cap)
        borrowing = "borrowed" if may_borrow else "refused"
        if self.held(self.reserved_of(asked)) < rule_now.reserved:
            return f"reserved|{borrowing}" if pending else "reserved"
        return borrowing

    def check_grant(self, grant: Grant, config: Config) -> None:
        """Right after a grant, every share it used is within its limit now, and so is
        the quota (G1, G2)."""
        if grant.kind == "reserved":
            assert grant.asked is not None
            held = len(self.live(self.reserved_of(grant.asked)))
            assert held <= config.reserved(grant.asked), "G2: a share granted past its limit"
        else:
            assert len(self.live(self.in_pool)) <= config.pool_limit, "G2: pool past its limit"
        if grant.ticketed:
            assert grant.asked is not None
            cap = config.cap(grant.asked)
            assert cap is not None
            ticketed = self.live(lambda g: g.ticketed and g.asked == grant.asked)
            assert len(ticketed) <= cap, "G2: a group borrowed past its max"
        assert len(self.live()) <= config.limit, "G1: granted past the limit"

    @rule(grant=grants, by_secret=st.booleans())
    def release(self, grant: Grant, by_secret: bool) -> None:
        """A holder gives its lease back: with its token, or (a proposer that never heard
        of its grant) with its secret alone."""
        token = str(Token(parse_token(grant.token).secret)) if by_secret else grant.token
        held = grant.lease_id in self.entries

        outcome = self.store.release(self.db, token)
        event(f"release ({'secret' if by_secret else 'token'}): {outcome}")

        expected = ReleaseOutcome.RELEASED if held else ReleaseOutcome.ALREADY_RELEASED
        assert outcome is expected, "G4: release of its own lease"
        self.entries.pop(grant.lease_id, None)
        self.tickets.pop(grant.lease_id, None)  # its ticket goes with it
        self.step = "G4: a release changed another lease"

    @precondition(lambda self: self.entries)
    @rule(data=st.data())
    def a_holder_gives_its_lease_back(self, data: st.DataObject) -> None:
        """The same as release, for a lease the store still holds (most grants a machine
        keeps are long gone)."""
        held = [lease_id for lease_id in self.granted if lease_id in self.entries]
        lease_id = held[data.draw(st.integers(0, 7), label="lease") % len(held)]
        self.release(self.granted[lease_id], data.draw(st.booleans(), label="by_secret"))

    @rule(grant=grants, ttl=TTLS)
    def renew(self, grant: Grant, ttl: int | None) -> None:
        now = self.now()
        live = self.entries.get(grant.lease_id, now) > now

        result = self.store.renew(self.db, grant.token, ttl)
        event(f"renew: {type(result).__name__}")

        if not live:
            assert isinstance(result, LeaseLost), "renewed a lease that is not live"
            if grant.ticketed:
                self.tickets.pop(grant.lease_id, None)  # a lost lease gives its ticket back
            self.step = "G4: a lost renew changed a lease"
            return
        if self.drains_at_renewal(grant):
            assert isinstance(result, LeaseLost), "a lease borrowed before its group's cap lived on"
            del self.entries[grant.lease_id]
            self.step = "G4: a renew that gave its lease back changed another lease"
            return
        assert isinstance(result, Renewed), "a live lease was not renewed"
        expiry = max(self.entries[grant.lease_id], now + self.ttl_of(ttl))
        assert result.lease.expires_at_ms == expiry
        if grant.kind == "reserved" or grant.ticketed:  # a token that names its group
            assert (result.lease.group, result.lease.borrowed) == (
                grant.asked,
                grant.kind == "borrowed",
            )
        self.entries[grant.lease_id] = expiry
        if grant.ticketed:
            ticket = self.tickets.get(grant.lease_id, 0)
            assert ticket > now, "a live borrowed lease had no live ticket"
            self.tickets[grant.lease_id] = max(ticket, now + self.ttl_of(ttl) + TICKET_SLACK_MS)
        self.step = "G4: a renew changed another lease"

    def drains_at_renewal(self, grant: Grant) -> bool:
        """A lease its group borrowed with no ticket, while the group (the same one, not
        forgotten since) is now capped or may not borrow: its renewal gives it back, so
        that leases taken before the cap drain (domain.borrowing)."""
        rule_now = self.config.rules.get(grant.asked) if grant.asked is not None else None
        return (
            grant.kind == "borrowed"
            and not grant.ticketed
            and rule_now is not None
            and grant.incarnation == self.incarnation[rule_now.group]
            and rule_now.borrow_cap is not None
        )

    @rule(grant=grants, other=grants, ttl=TTLS)
    def use_another_grants_fence(self, grant: Grant, other: Grant, ttl: int | None) -> None:
        """A token with this grant's secret and another grant's fence, shard and group: a
        stale or forged token, which must change nothing (G4)."""
        mine, theirs = parse_token(grant.token), parse_token(other.token)
        assume(mine.fence != theirs.fence)
        forged = str(replace(theirs, secret=mine.secret))
        status_before, before = self.stored()

        assert self.store.release(self.db, forged) is ReleaseOutcome.ALREADY_RELEASED
        assert isinstance(self.store.renew(self.db, forged, ttl), LeaseLost)

        status_after, after = self.stored()
        assert after == before, "G4: a token not its grant's changed a lease"
        assert status_after.in_use == status_before.in_use

    @rule(ms=st.integers(0, 15_000))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)
        self.step = "time passing changed a lease"

    @rule(change=reservation_changes())
    def operator_changes_groups(self, change: tuple[int, tuple[Reservation, ...]]) -> None:
        limit, named = change
        self.apply(Config(limit, {rule.group: rule for rule in named}))

    def apply(self, config: Config) -> None:
        status = self.store.set_quota(self.db, Quota(config.limit, TTL), config.rules.values())
        self.configs.append(config)
        assert status.limit == config.limit
        for group in self.listed - listed_in(status):
            self.incarnation[group] += 1  # forgotten: its leases had all ended
            event("a group was forgotten")
        self.listed = listed_in(status)
        if self.pending():
            event("a change left shares held down")
        self.step = "set_quota changed a lease"

    @precondition(lambda self: self.entries)
    @rule()
    def every_holder_vanishes(self) -> None:
        """Once every lease has ended, and its margin, the quota's shares can be taken in
        full: each group's reservation by that group alone, then the pool, and no more."""
        self.clock.advance(max(0, max(self.entries.values()) - self.now()) + SKEW_MARGIN_MS + 1)
        self.clock.advance(TICKET_SLACK_MS)  # tickets outlive their leases
        # A split share's claim to re-share, and a store's last settling, have run out.
        self.clock.advance(SETTLE_EVERY_MS)
        self.tickets.clear()
        config = self.config
        for group, rule_now in config.rules.items():
            for _ in range(rule_now.reserved):
                self.must_get(group, "reserved")
        for _ in range(config.pool_limit):
            self.must_get(None, "pool")
        assert isinstance(self.store.acquire(self.db, "machine"), Rejected), "G1: past the pool"
        for group, rule_now in config.rules.items():
            if rule_now.borrow_cap != 0:
                result = self.store.acquire(self.db, "machine", group=group)
                assert isinstance(result, Rejected), f"G1: {group} past its share and the pool"
        assert not self.pending(), "an idle quota's shares are still held down"

    def must_get(self, asked: str | None, kind: str) -> None:
        result = self.store.acquire(self.db, "machine", group=asked)
        assert isinstance(result, Granted), f"{asked}: no {kind} lease in an idle quota"
        assert parse_token(result.token).reserved == (kind == "reserved"), f"{asked}: {kind}"
        self.forget_reclaimed(result)
        incarnation = self.incarnation.get(asked or "", 0)
        grant = Grant(result.lease.id, result.token, asked, kind, self.epoch, False, incarnation)
        self.add(grant, result.lease.expires_at_ms)
        self.step = "an acquire changed another lease"

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def status_matches_the_model(self) -> None:
        status = self.sync(f"{self.step} (or status differs from the model)")
        self.listed = listed_in(status)
        config = self.config
        view = status.groups
        listed = {} if view is None else {group.group: group for group in view.groups}
        assert status.in_use == len(self.live())
        assert status.limit == config.limit
        # G3: each lease in status is named for the grant the model made.
        for lease in status.leases:
            grant = self.granted[lease.id]
            if lease.borrowed:
                assert grant.kind == "borrowed", f"{grant.kind} shown as borrowed"
                assert lease.group == grant.asked, "a borrowed lease named another group"
                assert grant.incarnation == self.incarnation[lease.group], (
                    "a forgotten group's borrowed lease counted as a new group's"
                )
            elif lease.group:
                assert grant.kind == "reserved", f"{grant.kind} shown as reserved"
                assert lease.group == grant.asked, "G3: a reserved lease of another caller"
            else:
                # A plain pool lease, or a forgotten group's borrowed one.
                assert grant.kind == "pool" or (
                    grant.kind == "borrowed"
                    and grant.incarnation < self.incarnation[grant.asked or ""]
                ), f"a {grant.kind} lease of {grant.asked} shown as no group's"
        # Each group's numbers, as the model counts them.
        for group, shown in listed.items():
            rule_now = config.rules.get(group)
            assert shown.retired == (rule_now is None)
            if rule_now is not None:
                assert (shown.reserved, shown.borrow, shown.max) == (
                    rule_now.reserved,
                    rule_now.borrow,
                    rule_now.max,
                )
            assert shown.reserved_in_use == len(self.live(self.reserved_of(group)))
            borrowed = self.live(self.borrowed_of(group, self.incarnation[group]))
            assert shown.borrowed == len(borrowed)
        assert set(config.rules) <= set(listed), "a named group is missing from status"
        if view is not None:
            pool_in_use = len(self.live(self.in_pool))
            assert view.pool_in_use == pool_in_use
            # Held down while a change is pending, never above its share.
            assert view.pool_limit <= config.pool_limit
            if not self.pending():
                assert view.pool_limit == config.pool_limit

    @invariant()
    def shares_hold(self) -> None:
        # G1: within the largest limit since the oldest live lease, and the limit itself
        # once every live lease was granted under it.
        live = self.live()
        assert len(live) <= max(config.limit for config in self.since(live)), "G1"
        if all(grant.epoch == self.epoch for grant in live):
            assert len(live) <= self.config.limit, "G1: not settled within the limit"
        # G2: the pool, each group's reservation and each capped group's borrowing.
        pool = self.live(self.in_pool)
        assert len(pool) <= max(config.pool_limit for config in self.since(pool)), "G2: pool"
        for group in GROUPS:
            reserved = self.live(self.reserved_of(group))
            window = self.since(reserved)
            assert len(reserved) <= max(config.reserved(group) for config in window), (
                f"G2: {group} holds more reserved leases than it was ever given"
            )
            borrowed = self.live(self.borrowed_of(group))
            caps = [config.cap(group) for config in self.since(borrowed)]
            if borrowed and None not in caps:
                assert len(borrowed) <= max(cap or 0 for cap in caps), (
                    f"G2: {group} borrowed past its max"
                )


def machine_for(make: Callable[[FakeClock], LeaseStore], *, split: bool) -> type[GroupMachine]:
    class Machine(GroupMachine):
        def __init__(self) -> None:
            self.split = split
            super().__init__(make)

    return Machine


def secrets() -> Callable[[], str]:
    """Grant secrets in a fixed order, so that a machine's run is the same each time it is
    replayed (lease ids, and the order of entries, follow from them)."""
    numbers = itertools.count()
    return lambda: f"machine-secret-{next(numbers):08d}"


def store_options(split: bool) -> dict[str, Any]:
    """A seeded shard chooser (a replay takes the same shards), and shards of PER_SHARD
    leases for the split machines; the skew margin as deployed."""
    options: dict[str, Any] = {"rng": random.Random(0)}
    if split:
        options["shard_capacity"] = lambda _quota: PER_SHARD
    return options


MEMORY = settings(max_examples=250, stateful_step_count=50, deadline=None)
# The embedded DynamoDB answers a request in ~15 ms: fewer, longer runs keep the store's
# two machines under a minute.
DYNAMODB = settings(
    max_examples=6,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("split", [False, True], ids=["one-item", "split"])
def test_group_invariants_hold_on_the_in_memory_store(split: bool) -> None:
    run_state_machine_as_test(
        machine_for(
            lambda clock: InMemoryLeaseStore(clock, secrets(), **store_options(split)),
            split=split,
        ),
        settings=MEMORY,
    )


@pytest.mark.integration
@pytest.mark.parametrize("split", [False, True], ids=["one-item", "split"])
def test_group_invariants_hold_on_the_dynamodb_store(
    request: pytest.FixtureRequest, split: bool
) -> None:
    client = request.getfixturevalue("dynamodb_client")
    table = request.getfixturevalue("leases_table")
    run_state_machine_as_test(
        machine_for(
            lambda clock: DynamoDBLeaseStore(
                client, table, clock, secrets(), **store_options(split)
            ),
            split=split,
        ),
        settings=DYNAMODB,
    )


# --- The machine can fail: stores broken on purpose --------------------------------------


class _OneTooManyItems(InMemoryItems):
    """Broken: a group's reserved share grants one lease past its limit."""

    def write(self, key: str, write: ItemWrite) -> Written:
        item = self.snapshot().get(key)
        if not isinstance(write, GrantWrite) or "~" not in key or item is None:
            return super().write(key, write)
        raised = replace(item, quota=replace(item.quota, limit=item.quota.limit + 1))
        granted = apply_write(key, raised, write)
        if granted is None:
            return super().write(key, write)
        with self._lock:
            self._items[key] = replace(granted, quota=item.quota)
        return Written(True, granted)


class _OneTooMany(InMemoryLeaseStore):
    def __init__(self, clock: FakeClock, secrets: Callable[[], str], **options: Any) -> None:
        super().__init__(clock, secrets, items=_OneTooManyItems(), **options)


class _OtherIsApi(InMemoryLeaseStore):
    """Broken: a caller that asks as `other` is served as api (api's reserved leases)."""

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        group = "api" if group == "other" else group
        return super().acquire(database, holder, ttl_ms, secret, group=group)


@pytest.mark.parametrize("split", [False, True], ids=["one-item", "split"])
@pytest.mark.parametrize("broken", [_OneTooMany, _OtherIsApi])
def test_the_machine_finds_a_broken_store(broken: type[InMemoryLeaseStore], split: bool) -> None:
    """On one item the machine's prediction of what is due fails first; split (nothing is
    predicted), G2 and G3 do."""
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine_for(
                lambda clock: broken(clock, secrets(), **store_options(split)), split=split
            ),
            settings=settings(
                max_examples=200,
                stateful_step_count=30,
                deadline=None,
                derandomize=True,
                phases=[Phase.generate],
                report_multiple_bugs=False,
            ),
        )


@pytest.mark.integration
@pytest.mark.parametrize("existing", [True, False], ids=["quota-in-use", "new-quota"])
def test_reserving_a_whole_limit_on_dynamodb_leaves_a_working_quota(
    request: pytest.FixtureRequest, existing: bool
) -> None:
    """The pool's share is then 0: an item of limit 0 is a sound quota, not a corrupt one
    (it once read back as CorruptQuota and left the quota unusable)."""
    client = request.getfixturevalue("dynamodb_client")
    table = request.getfixturevalue("leases_table")
    store = DynamoDBLeaseStore(client, table, FakeClock())
    if existing:
        store.set_quota("orders", Quota(3, TTL))

    status = store.set_quota("orders", Quota(3, TTL), [Reservation("api", 3)])

    assert status.limit == 3
    assert status.groups is not None
    assert status.groups.pool_limit == 0
    grants = [store.acquire("orders", "fn", group="api") for _ in range(3)]
    assert all(isinstance(grant, Granted) and parse_token(grant.token).reserved for grant in grants)
    assert isinstance(store.acquire("orders", "fn", group="api"), Rejected)
    assert isinstance(store.acquire("orders", "fn"), Rejected)
    assert store.delete_quota("orders")
