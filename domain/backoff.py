"""Jittered backoff between acquire attempts (AWS Architecture Blog, "Exponential Backoff
and Jitter"): spreading retries keeps waiting acquirers from hitting the item in lockstep."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InvalidInput

_MAX_DOUBLINGS = 32


@dataclass(frozen=True, slots=True)
class Backoff(ABC):
    base_ms: int = 20
    cap_ms: int = 1000

    def __post_init__(self) -> None:
        if self.base_ms < 1:
            raise InvalidInput("base_ms", f"is {self.base_ms}; must be at least 1")
        if self.cap_ms < self.base_ms:
            raise InvalidInput("cap_ms", f"is {self.cap_ms}; must be at least base_ms")

    @abstractmethod
    def delays(self, rng: random.Random) -> Iterator[int]:
        """An endless series of waits in milliseconds; the caller stops at its deadline."""


@dataclass(frozen=True, slots=True)
class FullJitter(Backoff):
    """Wait a uniform time in [0, min(cap, base * 2**attempt)]."""

    def delays(self, rng: random.Random) -> Iterator[int]:
        attempt = 0
        while True:
            ceiling = min(self.cap_ms, self.base_ms << min(attempt, _MAX_DOUBLINGS))
            yield round(rng.uniform(0, ceiling))
            attempt += 1


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter(Backoff):
    """Wait min(cap, uniform(base, previous * 3)): grows like exponential, less bunched."""

    def delays(self, rng: random.Random) -> Iterator[int]:
        previous = float(self.base_ms)
        while True:
            previous = min(float(self.cap_ms), rng.uniform(self.base_ms, previous * 3))
            yield round(previous)


@dataclass(frozen=True, slots=True)
class SteadyJitter(Backoff):
    """Wait uniform(base, cap) every time. Growing backoffs favour the waiter that arrived
    last (it polls most often); a steady one gives every waiter the same odds."""

    def delays(self, rng: random.Random) -> Iterator[int]:
        while True:
            yield round(rng.uniform(self.base_ms, self.cap_ms))


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant (epoch milliseconds) after which a caller stops waiting."""

    at_ms: int

    def remaining_ms(self, now_ms: int) -> int:
        return max(0, self.at_ms - now_ms)

    def clip(self, delay_ms: int, now_ms: int) -> int:
        """The part of `delay_ms` that still ends by the deadline."""
        return min(delay_ms, self.remaining_ms(now_ms))
