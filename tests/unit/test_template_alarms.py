"""infra/template.yaml's alarms on failures that need someone: the helper's errors, Lambda
throttles of every function, DynamoDB throttles of both tables, and more MySQL connections
than the quota allows. (The alarms on the lease metrics per database are in
test_template.py.) Offline: the template is read as YAML and resolved as in test_template."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import HELPER_ERRORS
from tests.unit.test_template import FUNCTION, MODES, STACK, Stack, load_template

ALARM = "AWS::CloudWatch::Alarm"


def alarms_on(stack: Stack, namespace: str, metric: str) -> list[dict[str, Any]]:
    """The resolved properties of every alarm on `metric` in `namespace`."""
    return [
        properties
        for properties in (stack.resolve(a["Properties"]) for a in stack.of_type(ALARM).values())
        if (properties["Namespace"], properties["MetricName"]) == (namespace, metric)
    ]


def dimensions(properties: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in properties["Dimensions"]}


def fires_on_the_first_in_a_minute(properties: dict[str, Any]) -> None:
    assert properties["Statistic"] == "Sum"
    assert properties["Period"] == 60
    assert properties["EvaluationPeriods"] == 1
    assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert properties["Threshold"] == 1
    assert properties["TreatMissingData"] == "notBreaching"


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(load_template())


@pytest.fixture(scope="module", params=list(MODES))
def mode_stack(request: pytest.FixtureRequest) -> Stack:
    """The demo stack, and the stack beside an existing database."""
    return Stack(load_template(), MODES[request.param])


def test_helper_errors_alarm_watches_the_metric_the_helper_writes(mode_stack: Stack) -> None:
    stack = mode_stack
    helper = stack.functions()["HelperFunction"]
    service = helper["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    assert service == f"{STACK}-helper"
    (alarm,) = alarms_on(stack, stack.parameter("MetricsNamespace"), HELPER_ERRORS)
    # The helper writes HelperErrors with its service as the only dimension
    # (service.errors.record_helper_error), so one alarm sees every database it serves.
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service}]
    fires_on_the_first_in_a_minute(alarm)


def test_the_helpers_lambda_errors_alarm(mode_stack: Stack) -> None:
    stack = mode_stack
    errors = {dimensions(a)["FunctionName"]: a for a in alarms_on(stack, "AWS/Lambda", "Errors")}
    helper = stack._ref("HelperFunction")
    assert helper in errors, sorted(errors)
    assert list(dimensions(errors[helper])) == ["FunctionName"]
    fires_on_the_first_in_a_minute(errors[helper])


def test_every_function_has_a_throttles_alarm(mode_stack: Stack) -> None:
    stack = mode_stack
    throttles = alarms_on(stack, "AWS/Lambda", "Throttles")
    watched = [dimensions(alarm)["FunctionName"] for alarm in throttles]
    functions = [stack._ref(name) for name in stack.of_type(FUNCTION)]
    assert sorted(watched) == sorted(functions)
    for alarm in throttles:
        assert list(dimensions(alarm)) == ["FunctionName"]
        fires_on_the_first_in_a_minute(alarm)


@pytest.mark.parametrize("metric", ["ReadThrottleEvents", "WriteThrottleEvents"])
def test_both_tables_have_read_and_write_throttle_alarms(mode_stack: Stack, metric: str) -> None:
    stack = mode_stack
    alarms = alarms_on(stack, "AWS/DynamoDB", metric)
    tables = [stack._ref(name) for name in stack.of_type("AWS::DynamoDB::Table")]
    assert len(tables) == 2
    assert sorted(dimensions(alarm)["TableName"] for alarm in alarms) == sorted(tables)
    for alarm in alarms:
        assert list(dimensions(alarm)) == ["TableName"]
        fires_on_the_first_in_a_minute(alarm)


def test_more_mysql_connections_than_the_quota_allows_raises_an_alarm(stack: Stack) -> None:
    (properties,) = (
        alarm["Properties"]
        for alarm in stack.of_type(ALARM).values()
        if alarm["Properties"]["MetricName"] == "DatabaseConnections"
    )
    # The limit the seeder wrote (QuotaLimit, or QuotaLimitPercent of max_connections)
    # plus the connections that are not the functions': service.seeder.put_seed returns
    # their sum as the custom resource's Data.ConnectionsAlarmThreshold.
    (quota,) = stack.of_type("Custom::LeaseQuota")
    assert properties["Threshold"] == {"Fn::GetAtt": [quota, "ConnectionsAlarmThreshold"]}
    seeded = stack.of_type("Custom::LeaseQuota")[quota]["Properties"]
    assert seeded["OtherConnections"] == {"Ref": "DatabaseOtherConnections"}
    resolved = stack.resolve(properties)
    assert (resolved["Namespace"], resolved["MetricName"]) == ("AWS/RDS", "DatabaseConnections")
    assert resolved["Dimensions"] == [
        {"Name": "DBInstanceIdentifier", "Value": stack._ref("Database")}
    ]
    assert resolved["Statistic"] == "Maximum"
    assert resolved["ComparisonOperator"] == "GreaterThanThreshold"
    assert resolved["Period"] == 60


@pytest.mark.parametrize("topic", ["", "arn:aws:sns:eu-west-1:123456789012:connlease-alarms"])
def test_every_alarm_notifies_the_topic_when_there_is_one(mode_stack: Stack, topic: str) -> None:
    overridden = Stack(mode_stack.template, {**mode_stack.overrides, "AlarmTopicArn": topic})
    for name, alarm in overridden.of_type(ALARM).items():
        properties = overridden.resolve(alarm["Properties"])
        for actions in ("AlarmActions", "OKActions"):
            if topic:
                assert properties[actions] == [topic], name
            else:
                assert actions not in properties, name
        assert properties["TreatMissingData"] == "notBreaching", name
        assert properties["AlarmDescription"], name


def test_the_rotation_errors_alarm_watches_the_function_the_transform_makes(
    stack: Stack,
) -> None:
    ((_, rotation),) = stack.of_type("AWS::SecretsManager::RotationSchedule").items()
    name = stack.resolve(rotation["Properties"]["HostedRotationLambda"]["RotationLambdaName"])
    # Lambda's limit on a name, with a stack name of 50 characters (infra/README.md's).
    assert name.startswith(STACK)
    assert 50 + len(name.removeprefix(STACK)) <= 64
    errors = {dimensions(a)["FunctionName"]: a for a in alarms_on(stack, "AWS/Lambda", "Errors")}
    alarm = errors[name]
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Sum",
        "GreaterThanOrEqualToThreshold",
        1,
    )
