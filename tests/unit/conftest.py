"""Fixtures shared by the client's unit tests: a fake clock and an in-memory quota of one
lease for the test module's `DB`."""

from __future__ import annotations

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import Quota
from tests.fakes import FakeClock
from tests.stores import memory_store


@pytest.fixture
def store(clock: FakeClock, request: pytest.FixtureRequest) -> InMemoryLeaseStore:
    store = memory_store(clock)
    store.set_quota(request.module.DB, Quota(limit=1, default_ttl_ms=30_000))
    return store
