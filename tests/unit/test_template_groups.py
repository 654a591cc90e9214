"""infra/template.yaml and the quota's groups (domain.groups): the Groups parameter wired to
the seeder's custom resource, the grants on the groups' share items, and the dashboard's
per-group widgets, whose searches must name the dimensions the EMF sink writes. Offline:
the template is read as YAML and resolved as in test_template."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from adapters.emf import DIMENSION, GROUP_DIMENSION, EmfMetricsSink
from domain import Metric
from domain.groups import (
    Reservation,
    cap_quota,
    format_reservations,
    parse_reservations,
    reserved_quota,
)
from domain.shards import shard_item
from service.seeder import SeedProperties
from tests.unit.test_template import EXISTING_DATABASE, Stack, as_list, dashboard, load_template

EXAMPLE = "api=10,batch=0:max=20:noborrow"
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\"([^\"]+)\"', '([^']+)', (\d+)\)")
# What each per-group widget shows, and with which statistic: the least left of a group's
# reservation in a minute, its borrowed leases, its refused acquires and its p99 wait.
GROUP_WIDGETS = {
    Metric.REMAINING_RESERVED: "Minimum",
    Metric.LEASES_BORROWED: "Sum",
    Metric.NO_CONNECTIONS_LEFT: "Sum",
    Metric.ACQUIRE_WAIT_MS: "p99",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Stack:
    return Stack(template)


def seeder_properties(stack: Stack) -> dict[str, Any]:
    """LeaseQuota's properties as the seeder receives them."""
    (quota,) = stack.of_type("Custom::LeaseQuota").values()
    resolved: dict[str, Any] = stack.resolve(quota["Properties"])
    return {key: value for key, value in resolved.items() if key != "ServiceTimeout"}


# ------------------------------------------------------------------ the parameter


def test_the_groups_parameter_is_a_string_empty_by_default_that_shows_its_syntax(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["Groups"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    assert EXAMPLE in parameter["Description"]
    assert len(parameter["Description"]) <= 4000  # CloudFormation's limit
    # The syntax shown is the seeder's (parse_reservations), and means what it says.
    assert parse_reservations(EXAMPLE) == (
        Reservation("api", 10),
        Reservation("batch", 0, borrow=False, max=20),
    )
    assert format_reservations(parse_reservations(EXAMPLE)) == EXAMPLE


def test_the_groups_parameter_reaches_the_seeder_as_its_groups_property(
    template: dict[str, Any],
) -> None:
    stack = Stack(template, {"Groups": EXAMPLE, "QuotaLimit": "30"})
    properties = seeder_properties(stack)
    assert properties["Groups"] == EXAMPLE
    seed = SeedProperties.of(properties)
    assert seed.reservations(seed.quota_limit(None), None) == parse_reservations(EXAMPLE)


@pytest.mark.parametrize("overrides", [{}, {"QuotaLimit": "5"}], ids=["percent", "limit"])
def test_the_default_sends_an_empty_groups_property_which_removes_any_reservations(
    template: dict[str, Any], overrides: dict[str, str]
) -> None:
    # Sent even when empty: an absent property would keep the quota's groups, so a stack
    # whose Groups parameter is cleared would keep the reservations it no longer names.
    properties = seeder_properties(Stack(template, overrides))
    assert properties["Groups"] == ""
    seed = SeedProperties.of(properties)
    assert seed.reservations(seed.quota_limit(151), 151) == ()


# ------------------------------------------------------------------ grants


@pytest.mark.parametrize(
    ("overrides", "caller"),
    [
        ({"LeaseMode": "lambda"}, "HelperFunction"),
        ({"LeaseMode": "direct"}, "TestFunction"),
        # What your own function attaches to take leases in-process, in either mode.
        ({}, "DirectLeasesPolicy"),
        (EXISTING_DATABASE, "DirectLeasesPolicy"),
        (EXISTING_DATABASE, "HelperFunction"),
    ],
    ids=["helper", "test-direct", "policy", "policy-existing", "helper-existing"],
)
def test_the_lease_callers_may_touch_their_databases_group_shares_and_no_others(
    template: dict[str, Any], overrides: dict[str, str], caller: str
) -> None:
    stack = Stack(template, overrides | {"QuotaDatabase": "orders-mysql"})
    leases = stack._attribute("LeasesTable", "Arn")
    (statement,) = (
        s for s in stack.statements(stack.resources[caller]) if leases in as_list(s["Resource"])
    )
    patterns = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]

    def allowed(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)

    database = "orders-mysql"
    shares = [reserved_quota(database, "api"), cap_quota(database, "batch")]
    # The quota, its shards, each group's reservation and cap, and their shards.
    for key in [database, shard_item(database, 2), *shares, *(shard_item(s, 1) for s in shares)]:
        assert allowed(key), key
    for key in (
        "billing-mysql",
        reserved_quota("billing-mysql", "api"),
        reserved_quota("orders-mysql-b", "api"),
        shard_item("orders-mysql-b", 0),
    ):
        assert not allowed(key), key


# ------------------------------------------------------------------ dashboard


def searches(widget: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], str, str, int]]:
    """(schema, metric, statistic, period) of each SEARCH in a widget."""
    for row in widget["properties"]["metrics"]:
        if isinstance(row[0], dict) and "expression" in row[0]:
            match = SEARCH.fullmatch(row[0]["expression"])
            assert match, row[0]["expression"]
            schema = tuple(part.strip() for part in match.group(1).split(","))
            yield schema, match.group(2), match.group(3), int(match.group(4))


def emf_dimensions(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> set[str]:
    """The dimensions of a group's metric as the EMF sink writes it in the helper, whose
    environment (the template's) names its service."""
    variables = stack.functions()["HelperFunction"]["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.setenv(name, str(variables[name]))
    namespace = stack.parameter("MetricsNamespace")
    metrics = Metrics()
    metrics.clear_metrics()
    capsys.readouterr()
    try:
        EmfMetricsSink(metrics, namespace).record(
            Metric.REMAINING_RESERVED, 3, "orders-mysql", "api"
        )
    finally:
        metrics.clear_metrics()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (document,) = (line for line in lines if "RemainingReserved" in line)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == namespace
    (dimension_set,) = directive["Dimensions"]
    return set(dimension_set)


def test_the_group_searches_name_the_dimensions_the_emf_sink_writes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = stack.parameter("MetricsNamespace")
    written = emf_dimensions(stack, monkeypatch, capsys)
    assert written == {"service", DIMENSION, GROUP_DIMENSION}
    group_searches = [
        search
        for widget in dashboard(stack)["widgets"]
        for search in searches(widget)
        if GROUP_DIMENSION in search[0][1:]
    ]
    assert group_searches
    for schema, metric, _statistic, _period in group_searches:
        assert schema[0] == namespace, metric
        # A search's schema matches metrics with exactly these dimensions: the group's
        # line, never the database's own (database, service).
        assert set(schema[1:]) == written, metric


def test_each_group_metric_has_its_own_widget_with_one_line_per_group(stack: Stack) -> None:
    shown: dict[str, tuple[str, int]] = {}
    for widget in dashboard(stack)["widgets"]:
        found = [s for s in searches(widget) if GROUP_DIMENSION in s[0][1:]]
        if not found:
            continue
        # One metric per widget, a line per group found (no group is listed by name).
        ((_schema, metric, statistic, period),) = found
        assert "per group" in widget["properties"]["title"], widget
        assert metric not in shown, metric
        shown[metric] = (statistic, period)
    # The group metrics are standard resolution: one-minute points.
    assert shown == {metric.value: (stat, 60) for metric, stat in GROUP_WIDGETS.items()}


def test_the_dashboards_widgets_fit_the_grid_without_overlapping(stack: Stack) -> None:
    cells: dict[tuple[int, int], str] = {}
    for widget in dashboard(stack)["widgets"]:
        x, y, width, height = (widget[k] for k in ("x", "y", "width", "height"))
        assert x + width <= 24, widget["properties"]["title"]
        for cell in ((i, j) for i in range(x, x + width) for j in range(y, y + height)):
            title = widget["properties"]["title"]
            assert cell not in cells, f"{title!r} overlaps {cells[cell]!r}"
            cells[cell] = title
