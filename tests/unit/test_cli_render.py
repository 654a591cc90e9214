"""What the command line prints (cli.render) and how it reads a duration
(cli.set_quota.parse_duration_ms): no network."""

from __future__ import annotations

import json

import pytest

from cli.app import BAD_USAGE, CliError
from cli.render import lease_doc, oldest, span, status_doc
from cli.set_quota import parse_duration_ms
from domain import Lease, QuotaStatus
from domain.groups import GroupStatus, GroupsView
from domain.tokens import label

NOW = 1_800_000_000_000
TTL = 30_000


def lease(
    key: str, holder: str, *, granted_ago_ms: int | None, left_ms: int, group: str = ""
) -> Lease:
    """A lease granted that long before NOW (None: not known, an entry from before)."""
    granted_at_ms = 0 if granted_ago_ms is None else NOW - granted_ago_ms
    return Lease(key, holder, NOW + left_ms, fence=1, group=group, granted_at_ms=granted_at_ms)


def status_of(*leases: Lease, groups: GroupsView | None = None) -> QuotaStatus:
    live = sum(1 for found in leases if found.is_live(NOW))
    return QuotaStatus(
        database="orders-mysql",
        limit=5,
        default_ttl_ms=TTL,
        in_use=live,
        remaining=5 - live,
        expired=len(leases) - live,
        leases=leases,
        groups=groups,
    )


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0, "0ms"),
        (950, "950ms"),
        (999, "999ms"),
        (-500, "-500ms"),
        (1_000, "1s"),
        (1_999, "1s"),
        (42_000, "42s"),
        (59_999, "59s"),
        (60_000, "1m00s"),
        (185_000, "3m05s"),
        (3_599_999, "59m59s"),
        (3_600_000, "1h00m"),
        (7_800_000, "2h10m"),
        (86_400_000, "24h00m"),
    ],
)
def test_span_reads_as_a_person_says_it(ms: int, shown: str) -> None:
    assert span(ms) == shown


def test_oldest_is_the_live_lease_granted_first() -> None:
    first = lease("AAAAAAA1", "first", granted_ago_ms=50_000, left_ms=10_000)
    later = lease("AAAAAAA2", "later", granted_ago_ms=5_000, left_ms=25_000)
    ended = lease("AAAAAAA3", "ended", granted_ago_ms=90_000, left_ms=-60_000)

    assert oldest(status_of(later, ended, first), NOW) == first
    assert oldest(status_of(later, ended), NOW) == later


def test_oldest_of_no_live_lease_is_none() -> None:
    ended = lease("AAAAAAA3", "ended", granted_ago_ms=90_000, left_ms=-60_000)
    just_ended = lease("AAAAAAA4", "just", granted_ago_ms=30_000, left_ms=0)

    assert oldest(status_of(), NOW) is None
    assert oldest(status_of(ended, just_ended), NOW) is None


def test_oldest_without_grant_times_is_the_one_that_ends_first() -> None:
    """Entries from before grant times were kept: the expiry is all there is to go by."""
    sooner = lease("AAAAAAA5", "sooner", granted_ago_ms=None, left_ms=5_000)
    later = lease("AAAAAAA6", "later", granted_ago_ms=None, left_ms=20_000)

    assert oldest(status_of(later, sooner), NOW) == sooner


def test_lease_doc_shows_a_label_and_how_long_it_is_held() -> None:
    found = lease("Xy_9abcD", "api-1", granted_ago_ms=12_000, left_ms=18_000, group="api")

    assert lease_doc(found, NOW) == {
        "lease": label(found),
        "holder": "api-1",
        "group": "api",
        "borrowed": False,
        "granted_at_ms": NOW - 12_000,
        "expires_at_ms": NOW + 18_000,
        "held_ms": 12_000,
        "live": True,
    }
    unknown = lease("Xy_9abcE", "", granted_ago_ms=None, left_ms=-1)
    assert lease_doc(unknown, NOW)["granted_at_ms"] is None
    assert lease_doc(unknown, NOW)["held_ms"] is None
    assert lease_doc(unknown, NOW)["live"] is False
    assert lease_doc(unknown, NOW)["group"] is None


def test_status_doc_has_the_quotas_use_and_its_oldest_lease_but_no_lease_list() -> None:
    first = lease("Key0001a", "old-1", granted_ago_ms=40_000, left_ms=20_000)
    later = lease("Key0002b", "new-1", granted_ago_ms=1_000, left_ms=29_000)
    ended = lease("Key0003c", "gone-1", granted_ago_ms=100_000, left_ms=-70_000)

    document = status_doc(status_of(later, first, ended), NOW)

    assert {key: document[key] for key in ("database", "limit", "in_use", "remaining")} == {
        "database": "orders-mysql",
        "limit": 5,
        "in_use": 2,
        "remaining": 3,
    }
    assert (document["expired"], document["default_ttl_ms"]) == (1, TTL)
    assert not {"ok", "action", "leases"} & set(document)
    assert document["oldest"] == lease_doc(first, NOW)
    assert document.get("groups") is None
    text = json.dumps(document)
    for found in (first, later, ended):
        assert found.id not in text


def test_status_doc_of_a_quota_with_groups_and_no_live_lease() -> None:
    groups = GroupsView(
        pool_limit=3,
        pool_in_use=0,
        groups=(
            GroupStatus("api", 2, True, None, 0, 0),
            GroupStatus("batch", 0, True, 3, 0, 0),
        ),
    )

    document = status_doc(status_of(groups=groups), NOW)

    assert document["oldest"] is None
    assert (document["pool_limit"], document["pool_in_use"]) == (3, 0)
    assert [
        (group["group"], group["reserved"], group["reserved_in_use"], group.get("max"))
        for group in document["groups"]
    ] == [("api", 2, 0, None), ("batch", 0, 0, 3)]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("900", 900),
        ("900ms", 900),
        ("100ms", 100),
        ("30s", 30_000),
        (" 30s ", 30_000),
        ("5m", 300_000),
        ("5min", 300_000),
        ("45sec", 45_000),
        ("1h", 3_600_000),
        ("24h", 86_400_000),
    ],
)
def test_parse_duration_reads_milliseconds_and_units(text: str, ms: int) -> None:
    assert parse_duration_ms(text, "--ttl") == ms


@pytest.mark.parametrize("text", ["", "soon", "30x", "-5s", "1.5s", "30 s", "s", "5mins"])
def test_parse_duration_refuses_what_is_no_duration_as_bad_usage(text: str) -> None:
    with pytest.raises(CliError) as refused:
        parse_duration_ms(text, "--ttl")

    assert refused.value.code == BAD_USAGE
    assert str(refused.value) == (
        f"--ttl: {text!r} is no duration; write 900ms, 30s, 5m or 1h (a bare number is"
        " milliseconds)"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("99", "--ttl: must be at least 100ms, got 99ms"),
        ("99ms", "--ttl: must be at least 100ms, got 99ms"),
        ("0s", "--ttl: must be at least 100ms, got 0ms"),
        ("25h", "--ttl: must be at most 24h, got 25h"),
        ("1441m", "--ttl: must be at most 24h, got 1441m"),
        ("86400001", "--ttl: must be at most 24h, got 86400001ms"),
    ],
)
def test_parse_duration_refuses_a_ttl_out_of_range_naming_the_flag_and_unit(
    text: str, said: str
) -> None:
    with pytest.raises(CliError) as refused:
        parse_duration_ms(text, "--ttl")

    assert refused.value.code == BAD_USAGE
    assert str(refused.value) == said
