"""The ports: what the domain needs from the world. A clock, a metrics sink, and a store
of quota items that applies the typed writes of `domain.item` atomically, one at a time
per item (one conditional request each on DynamoDB)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .decisions import AcquireResult, ReleaseOutcome, RenewResult
from .item import ItemWrite, QuotaState


class Clock(ABC):
    @abstractmethod
    def now_ms(self) -> int:
        """Epoch milliseconds."""

    @abstractmethod
    def sleep_ms(self, ms: int) -> None: ...


class Metric(StrEnum):
    REMAINING_CONNECTIONS = "RemainingConnections"
    NO_CONNECTIONS_LEFT = "NoConnectionsLeftError"
    LEASES_ACQUIRED = "LeasesAcquired"
    LEASES_RELEASED = "LeasesReleased"
    LEASES_RECLAIMED = "LeasesReclaimed"
    ACQUIRE_WAIT_MS = "AcquireWaitMs"
    # Per group (domain.groups), beside the database: what is left of its reservation after
    # a reserved grant, and each lease it borrowed from the pool.
    REMAINING_RESERVED = "RemainingReserved"
    LEASES_BORROWED = "LeasesBorrowed"
    # An operator's force-release (connlease release): each lease removed without its token.
    LEASES_FORCE_RELEASED = "LeasesForceReleased"


class MetricsSink(ABC):
    @abstractmethod
    def record(self, metric: Metric, value: float, database: str, group: str | None = None) -> None:
        """Record one value for the database; with `group`, for that group of it."""


@dataclass(frozen=True, slots=True)
class Written:
    """One write's outcome: applied or not, and the item after it (applied) or as it was
    when refused (None: there is no such item)."""

    applied: bool
    item: QuotaState | None


class ItemStore(ABC):
    """Quota items by key. Each method is one atomic step (one request on DynamoDB) and
    raises CorruptQuota or StoreUnavailable rather than anything of its own."""

    @abstractmethod
    def read(self, key: str) -> QuotaState | None:
        """The item, read consistently; None if there is none."""

    @abstractmethod
    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        """Several items read consistently (one round trip per 100); missing ones left out."""

    @abstractmethod
    def write(self, key: str, write: ItemWrite) -> Written:
        """Apply `write` if its condition (`write.allows`) holds on the item as it is."""

    @abstractmethod
    def delete(self, key: str, epoch: int | None = None) -> bool:
        """Remove the item; with `epoch`, only while it is at that version
        (domain.item.may_forget). False if there was none, or it was not removed."""

    @abstractmethod
    def all_keys(self) -> list[str]:
        """Every item's key (a full scan: for operators, never on a lease's path)."""


class Leases(Protocol):
    """What a caller needs to take and give back leases: a store in-process, or the helper
    function over Lambda invoke."""

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult: ...

    def release(self, database: str, token: str) -> ReleaseOutcome: ...

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult: ...
