"""Fault rates for the fault-injecting proxies: a share per fault, drawn from a seeded
random number generator so that a run can be repeated."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class FaultShares:
    """Subclasses name one float field per fault: the share of requests (or connections)
    that meet it. The shares add up to at most 1; the rest pass untouched."""

    def __post_init__(self) -> None:
        shares = self.shares()
        if any(not 0 <= share <= 1 for share in shares.values()) or sum(shares.values()) > 1:
            raise ValueError(f"fault rates must be in [0, 1] and add up to at most 1: {self}")

    def shares(self) -> dict[str, float]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def total(self) -> float:
        return sum(self.shares().values())

    def pick(self, roll: float) -> str | None:
        """The fault (its field's name) for a uniform `roll` in [0, 1), or None."""
        for name, share in self.shares().items():
            if roll < share:
                return name
            roll -= share
        return None
