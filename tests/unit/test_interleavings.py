"""The change protocol under controlled interleavings (reliability.interleavings): every
scenario's schedules within one preemption, and seeded random ones, find no violation; and
with any one of the protocol's protections taken out, the checker finds the over-grant or
the lost change it guards against, from a schedule that replays. The long forms (two
preemptions, thousands of random schedules, the DynamoDB store) run in make reliability."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from domain import changes, item, plan
from domain.item import QuotaState
from domain.ports import Written
from reliability import interleavings, scheduler
from reliability.interleavings import EXPECTED, SCENARIOS

# Issue 22's seven races, each played by a scenario of its own (`race<n>-...`).
RACES = {n: [name for name in SCENARIOS if name.startswith(f"race{n}-")] for n in range(1, 8)}
# The other small scenarios, explored in full within one preemption as the races are (a few
# seconds in all); the mix of every actor is explored at random (its space is large).
BOUNDED = sorted(set(SCENARIOS) - {"mix"} - {name for names in RACES.values() for name in names})


@pytest.mark.parametrize("race", sorted(RACES))
def test_each_race_of_issue_22_is_played_and_no_schedule_within_one_preemption_breaks_it(
    race: int,
) -> None:
    assert len(RACES[race]) == 1, f"race {race}: scenarios {RACES[race]}"
    scenario = SCENARIOS[RACES[race][0]]

    plain = scheduler.replay(scenario.setup, "", EXPECTED)  # each actor to its end in turn
    report = scheduler.exhaustive(scenario.setup, EXPECTED, preemptions=1)

    assert plain.failures == [], plain.failures
    # A race needs two actors at the store (an emptied scenario would hold trivially).
    requests = Counter(step.split(": ")[0] for step in plain.trace if not step.endswith(": start"))
    assert len(requests) >= 2, f"race {race}: store requests by actor {dict(requests)}"
    assert report.complete, f"race {race}: the bound was not explored in full"
    assert report.failed is None, report.failed


@pytest.mark.parametrize("name", BOUNDED)
def test_no_schedule_within_one_preemption_violates_the_protocol(name: str) -> None:
    report = scheduler.exhaustive(SCENARIOS[name].setup, EXPECTED, preemptions=1)

    assert report.complete, f"{name}: the bound was not explored in full"
    assert report.failed is None, report.failed


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_seeded_random_schedule_violates_the_protocol(name: str) -> None:
    report = scheduler.randomized(SCENARIOS[name].setup, EXPECTED, runs=40, seed=2026, depth=3)

    assert report.failed is None, report.failed


@pytest.mark.parametrize(
    "name", ["race2-settle-vs-operator", "race7-groups-lower-pool", "split-share-lowered"]
)
def test_the_scenarios_of_a_pending_change_apply_a_settle_in_some_schedule(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock moves (a `tick` actor) so that a settle is not refused as too soon: the
    bounded run explores settles, not only their refusals."""
    settles = []
    write = interleavings.ScheduledItems.write

    def counted(self: interleavings.ScheduledItems, key: str, change: item.ItemWrite) -> Written:
        written = write(self, key, change)
        if isinstance(change, item.Accept) and change.settle_at_ms is not None:
            settles.append(written.applied)
        return written

    monkeypatch.setattr(interleavings.ScheduledItems, "write", counted)

    report = scheduler.exhaustive(SCENARIOS[name].setup, EXPECTED, preemptions=1)

    assert report.failed is None, report.failed
    assert any(settles), f"{name}: no settle applied in {report.schedules} schedules"


def _allows(write: type, rule: Callable[..., bool]) -> Callable[[pytest.MonkeyPatch], None]:
    def take_out(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(write, "allows", rule)

    return take_out


def _root_not_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change's accept leaves the root's own limit as it was (it grants meanwhile)."""
    accepted = item.Accept.applied

    def applied(self: item.Accept, found: QuotaState | None, key: str) -> QuotaState:
        after = accepted(self, found, key)
        return after if found is None else dataclasses.replace(after, quota=found.quota)

    monkeypatch.setattr(item.Accept, "applied", applied)


def _seal_keeps_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seal takes an item to the change's version but leaves its limit."""
    sealed = item.Seal.applied

    def applied(self: item.Seal, found: QuotaState | None, key: str) -> QuotaState:
        after = sealed(self, found, key)
        return after if found is None else dataclasses.replace(after, quota=found.quota)

    monkeypatch.setattr(item.Seal, "applied", applied)


def _no_drain_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """plan_limits as db40c7a had it: holding more than the limit in all, the items under
    their targets keep what they hold as their limits (race 7)."""

    def plan_limits(
        targets: Mapping[str, int], held: Mapping[str, int]
    ) -> tuple[dict[str, int], bool]:
        over = sum(max(0, held.get(key, 0) - target) for key, target in targets.items())
        limits, pending = dict(targets), over > 0
        for room_first in (True, False):
            for key, target in targets.items():
                if over and held.get(key, 0) <= target:
                    room = target - held.get(key, 0) if room_first else limits[key]
                    taken = min(room, over)
                    limits[key] -= taken
                    over -= taken
        return limits, pending

    monkeypatch.setattr(plan, "plan_limits", plan_limits)


def _flat_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item planned on its own, not each part as a whole first."""

    def plan_items(
        database: str,
        config: item.QuotaConfig,
        held: Mapping[str, int],
        capacity: Callable[[str], int],
        borrowed: Mapping[int, int] | None = None,
    ) -> tuple[dict[str, int], bool]:
        targets: dict[str, int] = {}
        for part in plan.all_parts(database, config):
            targets |= plan.item_targets(part, held, capacity(part.key))
        return plan.plan_limits(targets, held)

    monkeypatch.setattr(changes, "plan_items", plan_items)


def _borrow_at_any_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's borrowed lease granted whatever version of the quota its caller read."""
    allows = item.Grant.allows

    def anywhere(self: item.Grant, found: QuotaState | None) -> bool:
        return allows(
            dataclasses.replace(self, lease=dataclasses.replace(self.lease, epoch=None)), found
        )

    monkeypatch.setattr(item.Grant, "allows", anywhere)


def _accept_any_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change accepted at the version it read whatever fence floor a commit wrote since
    (it writes the floor it read back)."""
    allows = item.Accept.allows

    def any_floor(self: item.Accept, found: QuotaState | None) -> bool:
        highest = dataclasses.replace(self.config, fence_floor=2**53)
        return allows(dataclasses.replace(self, config=highest), found)

    monkeypatch.setattr(item.Accept, "allows", any_floor)


def _delete_past_refused_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deletion, or a change forgetting a group, deletes items whether or not its floor
    commit applied."""

    def floor_first(self: changes.Changes, database: str, commit: item.Commit) -> bool:
        self._items.write(database, commit)  # its answer unread: the protection taken out
        return True

    monkeypatch.setattr(changes.Changes, "_floor_first", floor_first)


# Each protection, taken out, and a scenario whose schedules show what it guards.
TAKEN_OUT: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "a limit set whatever the item's version": (
        _allows(item.SetLimit, lambda self, found: found is not None),
        "changes-overlap",
    ),
    "a seal over a later change's": (
        _allows(item.Seal, lambda self, found: True),
        "changes-overlap",
    ),
    "a change accepted whatever version it read": (
        _allows(item.Accept, lambda self, found: True),
        "changes-overlap",
    ),
    "the root granting while its quota is split (race 1)": (
        _root_not_frozen,
        "race1-first-split-vs-reclaim",
    ),
    "a seal that leaves limits": (_seal_keeps_limits, "race2-settle-vs-operator"),
    "items under their targets granting while the quota drains (race 7)": (
        _no_drain_rule,
        "race7-groups-lower-pool",
    ),
    "items planned one by one, not parts as wholes": (_flat_plan, "split-share-lowered"),
    "a borrowed lease granted at any version of its quota": (
        _borrow_at_any_version,
        "stale-cap",
    ),
    "a change accepted over a fence floor raised since it read the root": (
        _accept_any_floor,
        "delete-vs-recreate",
    ),
    "items deleted though the fence floor's commit was refused": (
        _delete_past_refused_floor,
        "forget-vs-readd",
    ),
    "a reclaim's grant past the size it was planned for": (
        _allows(
            item.Grant,
            lambda self, found: (
                found is not None
                and found.fenced
                and found.find(self.lease.id) is None
                and (
                    len(found.leases) < found.quota.limit
                    if not self.victims
                    else item.victims_match(found, self.victims)
                )
            ),
        ),
        "reclaim-across-changes",
    ),
}


@pytest.mark.parametrize("protection", sorted(TAKEN_OUT))
def test_the_checker_finds_what_each_protection_guards_against(
    protection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    take_out, name = TAKEN_OUT[protection]
    take_out(monkeypatch)
    scenario = SCENARIOS[name]

    report = scheduler.exhaustive(scenario.setup, EXPECTED, preemptions=2, max_schedules=3_000)

    assert report.failed is not None, f"{protection}: nothing found in {name}"
    again = scheduler.replay(scenario.setup, report.failed.schedule, EXPECTED)
    assert again.failures == report.failed.failures  # a failing schedule replays exactly


def test_the_command_line_explores_a_named_scenario() -> None:
    assert interleavings.main(["--scenario", "race7-groups-lower-pool", "--random", "3"]) == 0
