"""The pure core of connlease: quotas, leases, decisions, backoff and the ports.

Nothing here imports beyond the standard library, so it runs and is tested without AWS.
"""

from .backoff import Backoff, Deadline, DecorrelatedJitter, FullJitter
from .decisions import (
    AcquireResult,
    Granted,
    LeaseLost,
    NoCapacity,
    Rejected,
    ReleaseOutcome,
    Renewed,
    RenewResult,
)
from .errors import (
    ConnleaseError,
    CorruptQuota,
    HelperFailed,
    InvalidInput,
    RequestInProgress,
    StoreUnavailable,
    UnknownDatabase,
)
from .item import QuotaState
from .lease_store import LeaseStore
from .model import Lease, Quota, QuotaStatus
from .ports import Clock, ItemStore, Leases, Metric, MetricsSink
from .services import acquire_within, release_within
from .warm import KeepWarm

__all__ = [
    "AcquireResult",
    "Backoff",
    "Clock",
    "ConnleaseError",
    "CorruptQuota",
    "Deadline",
    "DecorrelatedJitter",
    "FullJitter",
    "Granted",
    "HelperFailed",
    "InvalidInput",
    "ItemStore",
    "KeepWarm",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "Leases",
    "Metric",
    "MetricsSink",
    "NoCapacity",
    "Quota",
    "QuotaState",
    "QuotaStatus",
    "Rejected",
    "ReleaseOutcome",
    "RenewResult",
    "Renewed",
    "RequestInProgress",
    "StoreUnavailable",
    "UnknownDatabase",
    "acquire_within",
    "release_within",
]
