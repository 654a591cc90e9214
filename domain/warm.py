"""Warm leases: an execution environment keeps its lease and connection across invocations.

A lease per invocation pays a store round trip on each side of every query, and a connect:
for a 20 ms query that alone caps a quota's use at about 83% (docs/benchmarks.md). Under
steady load a warm environment instead keeps both while it runs invocations back to back,
and gives them up:
- after `hold_ms` from its grant, at the end of the invocation running then, if someone
  waits for a lease (refused acquirers note it in the item; grants and renewals report it):
  the fairness bound. It then stays away about as long as a waiter sleeps between polls,
  so a waiter gets the slot; with nobody waiting it renews the lease for another hold;
- when an invocation raises, since the connection's state is then unknown.

An environment that is frozen between invocations cannot give anything back, so the two
promises that keep the quota honest are made up front:
- the server closes the connection itself after `idle_close_s` idle (MySQL's
  `wait_timeout`, set on every connection the warm client opens);
- the lease lasts until every invocation that may use it has ended, plus that idle time:
  a frozen environment's slot comes back by then, with its connection already closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .backoff import Backoff, SteadyJitter
from .model import MAX_TTL_MS, MIN_TTL_MS, Lease, check_int

MAX_IDLE_CLOSE_S = 3600
# The server closes an idle connection on its own schedule, and the lease's expiry is on
# the store's clock: a lease outlasts the idle time by this much.
CLOSE_SLACK_MS = 500
# A connection idle this close to its server-side timeout may be closed as it is used:
# open a new one instead.
STALE_MARGIN_MS = 250


class WarmStep(StrEnum):
    """What an invocation does with the lease its environment kept."""

    REUSE = "reuse"  # covers this invocation: use it as it is
    RENEW = "renew"  # within its hold, but ends too soon for this invocation: extend it
    NEW_HOLD = "new_hold"  # its hold is over, but nobody waited: renew it for another
    REPLACE = "replace"  # its hold is over and others wait: give back, wait a turn


@dataclass(frozen=True, slots=True)
class Kept:
    """A lease an environment holds between invocations, and its connection's last use."""

    lease: Lease
    granted_at_ms: int  # when its hold began: the grant, or a renewal for a new hold
    last_used_ms: int
    contended: bool  # someone waited when the store last answered


@dataclass(frozen=True, slots=True)
class KeepWarm:
    """How long a warm environment may keep a lease, and when its idle connection closes."""

    hold_ms: int = 500
    idle_close_s: int = 5

    def __post_init__(self) -> None:
        check_int("hold_ms", self.hold_ms, MIN_TTL_MS, MAX_TTL_MS)
        check_int("idle_close_s", self.idle_close_s, 1, MAX_IDLE_CLOSE_S)

    @property
    def idle_close_ms(self) -> int:
        return self.idle_close_s * 1000

    @property
    def after_last_use_ms(self) -> int:
        """How long the lease must outlast the connection's last use."""
        return self.idle_close_ms + CLOSE_SLACK_MS

    def ttl_ms(self, invocation_ms: int) -> int:
        """A new warm lease's TTL. Invocations start within its hold and last about as
        long as the first one may (`invocation_ms`, its remaining time): the lease ends
        after the last of them, plus the time the server takes to close the idle
        connection."""
        return self._lease_ms(self.hold_ms, invocation_ms)

    def needed_until_ms(self, invocation_end_ms: int) -> int:
        """The least expiry that lets an invocation ending then use the kept lease."""
        return invocation_end_ms + self.after_last_use_ms

    def covers(self, lease: Lease, last_use_ms: int) -> bool:
        """Whether the lease outlasts a connection last used then, idle close included."""
        return lease.expires_at_ms >= self.needed_until_ms(last_use_ms)

    def on_entry(self, kept: Kept, now_ms: int, invocation_end_ms: int) -> WarmStep:
        if self.hold_over(kept, now_ms):
            return WarmStep.REPLACE if kept.contended else WarmStep.NEW_HOLD
        if self.covers(kept.lease, invocation_end_ms):
            return WarmStep.REUSE
        return WarmStep.RENEW

    def renewal_ttl_ms(self, kept: Kept, now_ms: int, invocation_ms: int) -> int:
        """TTL for a renewal: as a new lease's, counted from the kept lease's grant."""
        return self._lease_ms(max(0, kept.granted_at_ms + self.hold_ms - now_ms), invocation_ms)

    def _lease_ms(self, hold_left_ms: int, invocation_ms: int) -> int:
        ttl_ms = hold_left_ms + invocation_ms + self.after_last_use_ms
        return min(max(ttl_ms, MIN_TTL_MS), MAX_TTL_MS)

    def hold_over(self, kept: Kept, now_ms: int) -> bool:
        return now_ms >= kept.granted_at_ms + self.hold_ms

    def give_back_after(self, kept: Kept, now_ms: int) -> bool:
        """At the end of an invocation: the hold is over and others may be waiting."""
        return kept.contended and self.hold_over(kept, now_ms)

    def connection_stale(self, kept: Kept, now_ms: int) -> bool:
        """Idle long enough that the server may have closed the connection."""
        return now_ms - kept.last_used_ms >= self.idle_close_ms - STALE_MARGIN_MS


def after_turn(backoff: Backoff) -> SteadyJitter:
    """How an environment whose hold is over waits for its next lease: it stays away about as
    long as a waiter sleeps between polls before it asks, and then polls at that steady pace.
    With polling there is no queue to join; starting over with short waits, as a new waiter
    does, would have it out-poll the environments that have waited longest."""
    return SteadyJitter(backoff.base_ms, backoff.cap_ms)


def someone_waits(others_waiting: bool | None, remaining: int | None) -> bool:
    """Whether others may wait for a holder's slot, from the store's answer. A store that
    does not say who waits (an older helper) is read by its free slots: with none left,
    giving back at the end of a hold is the fair guess."""
    return others_waiting if others_waiting is not None else not remaining
