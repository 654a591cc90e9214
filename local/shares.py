"""Fault rates for the fault-injecting proxies: a share per fault, drawn from a seeded
random number generator so that a run can be repeated."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import ClassVar, Generic, TypeVar, cast

F = TypeVar("F", bound=StrEnum)


@dataclass(frozen=True)
class FaultShares(Generic[F]):
    """Subclasses name one float field per fault: the share of requests (or connections)
    that meet it, and in `faults` the enum whose members are those fields' names in
    capitals. The shares add up to at most 1; the rest pass untouched."""

    faults: ClassVar[type[StrEnum]]

    def __post_init__(self) -> None:
        shares = self.shares()
        if any(not 0 <= share <= 1 for share in shares.values()) or sum(shares.values()) > 1:
            raise ValueError(f"fault rates must be in [0, 1] and add up to at most 1: {self}")

    def shares(self) -> dict[str, float]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def total(self) -> float:
        return sum(self.shares().values())

    def draw(self, rng: random.Random) -> F | None:
        """The fault the next request (or connection) meets, or None."""
        roll = rng.random()
        for name, share in self.shares().items():
            if roll < share:
                return cast("F", self.faults[name.upper()])
            roll -= share
        return None
