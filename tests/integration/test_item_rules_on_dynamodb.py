"""One home for the lease rules: every typed write of domain.item, applied by the DynamoDB
store (its condition expression, evaluated by the embedded DynamoDB) and by the rules as
written (domain.item.apply_write, what the in-memory store does), gives the same answer
and leaves the same item, on items of every shape: missing, fresh, full, with expired
entries, sealed at a version, a root with a configuration, one from before fences."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.dynamodb import DynamoDBItems, create_table
from adapters.dynamodb_item import quota_item
from domain.groups import Groups, Reservation
from domain.item import (
    Accept,
    Clear,
    Commit,
    Extend,
    Grant,
    ItemWrite,
    NewLease,
    NoteWanted,
    QuotaConfig,
    QuotaState,
    Remove,
    Seal,
    SetLimit,
    apply_write,
)
from domain.model import Lease, Quota
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000
IDS = ["AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "DDDDDDDD"]
DB = "orders"  # a database's name: its item is a quota's root
SHARD = "orders#1"


def leases(draw: st.DrawFn) -> tuple[Lease, ...]:
    ids = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=4))
    return tuple(
        Lease(
            lease_id,
            draw(st.sampled_from(["", "fn/a"])),
            NOW + draw(st.sampled_from([-5_000, -1, 0, 1, 30_000])),
            draw(st.integers(1, 5)),
            tag=draw(st.sampled_from([0, 2])),
            granted_at_ms=NOW // 1000 * 1000 - 60_000,
        )
        for lease_id in ids
    )


CONFIGS = st.sampled_from(
    [
        QuotaConfig(3, 30_000),
        QuotaConfig(8, 30_000, shards=2, pending=True, settled_at_ms=NOW - 5_000),
        QuotaConfig(
            6,
            30_000,
            groups=Groups().replaced([Reservation("api", 2, max=4)], 6),
            pending=False,
            settled_at_ms=NOW - 100,
        ),
        QuotaConfig(0, 30_000, deleted=True, fence_floor=41),  # a deleted quota's root
        QuotaConfig(4, 30_000, shards=2, fence_floor=12),  # a quota made again
    ]
)


@st.composite
def items(draw: st.DrawFn) -> tuple[str, QuotaState | None]:
    key = draw(st.sampled_from([DB, SHARD]))
    if draw(st.integers(0, 9)) == 0:
        return key, None
    entries = leases(draw)
    state = QuotaState(
        key,
        Quota(draw(st.integers(0, 4)), 30_000),
        entries,
        wanted_at_ms=draw(st.sampled_from([0, NOW - 10_000, NOW - 100])),
        fence=max((lease.fence for lease in entries), default=0) + draw(st.integers(0, 2)),
        epoch=draw(st.integers(0, 3)),
        config=draw(CONFIGS) if key == DB else None,
    )
    if key == DB and state.config is not None and not state.config.shards:
        state = replace(state, config=replace(state.config, limit=state.quota.limit))
    return key, state


@st.composite
def writes(draw: st.DrawFn) -> ItemWrite:  # noqa: PLR0911  (one return per kind of write)
    kind = draw(st.integers(0, 8))
    lease_id = draw(st.sampled_from(IDS))
    fence = draw(st.sampled_from([None, 1, 2, 3]))
    victims = tuple(
        Lease(victim, "", NOW + draw(st.sampled_from([-5_000, -1, 0])), 1)
        for victim in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=2))
    )
    epoch = draw(st.integers(0, 4))
    if kind == 0:
        ttl = draw(st.sampled_from([None, 10_000]))
        at = draw(st.sampled_from([None, 0, 2]))  # a borrowed lease: at one version only
        return Grant(NewLease(lease_id, "fn/b", ttl, draw(st.sampled_from([0, 2])), at), NOW)
    if kind == 1:
        new = NewLease(lease_id, "fn/b", None)
        return Grant(
            new, NOW, victims or (Lease(IDS[0], "", NOW - 5_000, 1),), draw(st.integers(0, 4))
        )
    if kind == 2:
        return Clear(victims or (Lease(IDS[1], "", NOW - 5_000, 2),))
    if kind == 3:
        return Remove(lease_id, fence)
    if kind == 4:
        return Extend(lease_id, fence, NOW + draw(st.sampled_from([-1, 1, 30_000])), NOW)
    if kind == 5:
        return NoteWanted(NOW)
    if kind == 6:
        if draw(st.booleans()):  # made with its fences from the floor, or none
            return Seal(epoch, 20_000, draw(st.sampled_from([0, 40])))
        return SetLimit(epoch, Quota(2, 20_000))
    config = draw(CONFIGS)
    if kind == 7:
        settle = draw(st.sampled_from([None, NOW]))
        return Accept(epoch, config, draw(st.integers(0, 3)), settle, 1_000)
    return Commit(epoch, config)


@pytest.fixture(scope="module")
def table(embedded_dynamodb: object) -> tuple[DynamoDBClient, str]:
    client = embedded_dynamodb.client()  # type: ignore[attr-defined]
    name = f"rules-{uuid.uuid4().hex[:8]}"
    create_table(client, name)
    return client, name


def comparable(state: QuotaState | None) -> object:
    """An item as both stores keep it (grant times to the second, as DynamoDB does)."""
    if state is None:
        return None
    return replace(state, leases=tuple(sorted(state.leases, key=lambda lease: lease.id)))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(found=items(), write=writes())
def test_the_dynamodb_store_applies_each_write_as_the_rules_say(
    table: tuple[DynamoDBClient, str], found: tuple[str, QuotaState | None], write: ItemWrite
) -> None:
    client, name = table
    key, state = found
    # A change seals and sets the limits of the items beside the root; the root it accepts.
    assume(key == DB if isinstance(write, Accept | Commit) else True)
    assume(key != DB if isinstance(write, Seal | SetLimit) else True)
    client.delete_item(TableName=name, Key={"pk": {"S": key}, "sk": {"S": "quota"}})
    if state is not None:
        client.put_item(TableName=name, Item=quota_item(state))
    store = DynamoDBItems(client, name, FakeClock(NOW))
    expected = apply_write(key, store.read(key), write)

    written = store.write(key, write)

    assert written.applied == (expected is not None), (write, state)
    after = store.read(key)
    assert comparable(after) == comparable(expected if expected is not None else store.read(key))
    if expected is not None:
        assert comparable(after) == comparable(expected)


@pytest.mark.parametrize(("root_floor", "read_floor"), [(0, 0), (0, 7), (7, 7), (7, 3), (7, 0)])
def test_an_accept_is_refused_once_a_commit_raised_the_floor_it_read(
    table: tuple[DynamoDBClient, str], root_floor: int, read_floor: int
) -> None:
    """A commit moves the root's fence floor, not its version: a change that read the root
    before it may not write the lower floor back (one token would name two grants)."""
    client, name = table
    root = QuotaState(
        DB,
        Quota(0, 30_000),
        (),
        epoch=2,
        config=QuotaConfig(4, 30_000, shards=2, fence_floor=root_floor),
    )
    client.put_item(TableName=name, Item=quota_item(root))
    store = DynamoDBItems(client, name, FakeClock(NOW))
    accept = Accept(2, QuotaConfig(4, 30_000, shards=2, fence_floor=read_floor), 0)
    before = store.read(DB)
    expected = apply_write(DB, before, accept)

    written = store.write(DB, accept)

    assert (expected is not None) == (root_floor <= read_floor)
    assert written.applied == (expected is not None)
    assert comparable(store.read(DB)) == comparable(expected or before)
