"""Warm leases' rules: how long a kept lease must last, and what an invocation does with it."""

from __future__ import annotations

import random

import pytest

from domain import DecorrelatedJitter, InvalidInput, Lease
from domain.warm import CLOSE_SLACK_MS, KeepWarm, Kept, WarmStep, after_turn

NOW = 1_800_000_000_000


def kept(
    granted_at_ms: int,
    expires_at_ms: int,
    last_used_ms: int | None = None,
    *,
    contended: bool = True,
) -> Kept:
    lease = Lease("lease-1", "orders-fn/8f14e45f", expires_at_ms)
    used = granted_at_ms if last_used_ms is None else last_used_ms
    return Kept(lease, granted_at_ms, used, contended)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"hold_ms": 0}, "hold_ms"),
        ({"hold_ms": 99}, "hold_ms"),
        ({"hold_ms": 1.5}, "hold_ms"),
        ({"idle_close_s": 0}, "idle_close_s"),
        ({"idle_close_s": 3601}, "idle_close_s"),
        ({"idle_close_s": True}, "idle_close_s"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        KeepWarm(**options)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_new_warm_lease_outlasts_every_invocation_of_its_hold_and_the_idle_close() -> None:
    warm = KeepWarm(hold_ms=500, idle_close_s=5)

    ttl_ms = warm.ttl_ms(invocation_ms=3_000)

    # An invocation that starts as the hold ends and runs its full time, then the server's
    # idle close of the connection a frozen environment left open.
    assert ttl_ms == 500 + 3_000 + 5_000 + CLOSE_SLACK_MS
    granted = kept(NOW, NOW + ttl_ms)
    last_start = NOW + 499
    assert warm.on_entry(granted, last_start, last_start + 3_000) is WarmStep.REUSE


def test_within_its_hold_a_lease_that_covers_the_invocation_is_reused() -> None:
    warm = KeepWarm(hold_ms=500, idle_close_s=5)
    granted = kept(NOW, NOW + 10_000)

    assert warm.on_entry(granted, NOW + 100, NOW + 4_000) is WarmStep.REUSE


def test_a_lease_that_would_end_before_the_invocation_and_its_idle_close_is_renewed() -> None:
    warm = KeepWarm(hold_ms=500, idle_close_s=5)
    granted = kept(NOW, NOW + 10_000)
    starts, ends = NOW + 100, NOW + 4_600  # + 5.5 s of idle close: past the lease's end

    assert warm.on_entry(granted, starts, ends) is WarmStep.RENEW
    ttl_ms = warm.renewal_ttl_ms(granted, starts, invocation_ms=ends - starts)
    assert starts + ttl_ms >= warm.needed_until_ms(ends)


def test_once_the_hold_is_over_a_full_quotas_lease_is_given_back_whatever_its_expiry() -> None:
    warm = KeepWarm(hold_ms=500)
    granted = kept(NOW, NOW + 60_000, contended=True)

    assert not warm.give_back_after(granted, NOW + 499)
    assert warm.give_back_after(granted, NOW + 500)
    assert warm.on_entry(granted, NOW + 500, NOW + 1_000) is WarmStep.REPLACE


def test_with_slots_free_a_lease_whose_hold_is_over_is_kept_for_another_hold() -> None:
    warm = KeepWarm(hold_ms=500)
    granted = kept(NOW, NOW + 60_000, contended=False)

    assert not warm.give_back_after(granted, NOW + 500)
    assert warm.on_entry(granted, NOW + 500, NOW + 1_000) is WarmStep.NEW_HOLD


def test_after_its_turn_an_environment_polls_steadily_not_first_like_a_newcomer() -> None:
    delays = after_turn(DecorrelatedJitter(base_ms=20, cap_ms=1_000)).delays(random.Random(5))

    waits = [next(delays) for _ in range(200)]

    assert all(20 <= wait <= 1_000 for wait in waits)
    # A new waiter's first waits are 20-60 ms; these are as long from the first one on.
    assert 400 <= sum(waits[:20]) / 20 <= 700
    assert 400 <= sum(waits) / len(waits) <= 600


def test_a_connection_idle_near_the_servers_timeout_counts_as_closed() -> None:
    warm = KeepWarm(idle_close_s=2)
    used = kept(NOW, NOW + 60_000, last_used_ms=NOW)

    assert not warm.connection_stale(used, NOW + 1_000)
    assert warm.connection_stale(used, NOW + 2_000)
