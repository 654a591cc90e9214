"""infra/template.yaml beside an existing database (ExistingDatabaseEndpoint and the other
Existing* parameters): no VPC, RDS or demo function of its own; the helper and the seeder in
the database's subnets, reaching MySQL through its security group; the seeder reads the
given secret and nothing else; managed policies your own functions attach. And the Rules
that refuse a set of parameters given in part. Offline: the template is read as YAML and
resolved as in test_template (the demo stack's own tests are there, run on both modes
where they hold for both)."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from domain.groups import reserved_quota
from domain.shards import shard_item
from service.seeder import SeedProperties
from service.settings import HelperSettings, SeederSettings
from tests.unit.test_template import (
    EXISTING_DATABASE,
    EXISTING_DATABASE_NO_SECRET,
    FUNCTION,
    Stack,
    as_list,
    dashboard,
    grants,
    load_template,
)

ENDPOINT = EXISTING_DATABASE["ExistingDatabaseEndpoint"]
PORT = EXISTING_DATABASE["ExistingDatabasePort"]
SECRET = EXISTING_DATABASE["ExistingDatabaseSecretArn"]
VPC = EXISTING_DATABASE["ExistingVpcId"]
SUBNETS = EXISTING_DATABASE["ExistingSubnetIds"].split(",")
DATABASE_GROUP = EXISTING_DATABASE["ExistingDatabaseSecurityGroupId"]
QUOTA = EXISTING_DATABASE["QuotaDatabase"]

# All the stack makes beside an existing database.
BESIDE = {
    "DependenciesLayer",
    "LeasesTable",
    "IdempotencyTable",
    "FunctionSecurityGroup",
    "DatabaseFromFunctions",
    "HelperLogGroup",
    "HelperFunction",
    "SeederLogGroup",
    "SeederFunction",
    "LeaseQuota",
    "InvokeHelperPolicy",
    "DirectLeasesPolicy",
    "Dashboard",
    "NoConnectionsLeftAlarm",
    "LowRemainingConnectionsAlarm",
    "LeasesReclaimedAlarm",
    "HelperErrorsAlarm",
    "HelperLambdaErrorsAlarm",
    "HelperThrottlesAlarm",
    "SeederThrottlesAlarm",
    "LeasesTableReadThrottlesAlarm",
    "LeasesTableWriteThrottlesAlarm",
    "IdempotencyTableReadThrottlesAlarm",
    "IdempotencyTableWriteThrottlesAlarm",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Stack:
    return Stack(template, EXISTING_DATABASE)


def variables(stack: Stack, function: str) -> dict[str, str]:
    found = stack.functions()[function]["Environment"]["Variables"]
    return {key: str(value) for key, value in found.items()}


# ------------------------------------------------------------------ the parameters


def test_the_mode_is_picked_by_the_endpoint_and_the_demo_stack_is_the_default(
    template: dict[str, Any], stack: Stack
) -> None:
    demo = Stack(template)
    assert demo.condition("CreatesDatabase")
    assert not demo.condition("BesideExistingDatabase")
    assert not stack.condition("CreatesDatabase")
    assert stack.condition("BesideExistingDatabase")
    for name, parameter in template["Parameters"].items():
        if name.startswith("Existing"):
            # Empty by default (the port has the MySQL default), and each says what it is for.
            assert parameter["Default"] == (3306 if name == "ExistingDatabasePort" else ""), name
            assert "existing database" in parameter["Description"], name
    # The console's form shows them together, first.
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    first = groups[0]["Parameters"]
    assert set(first) == {n for n in template["Parameters"] if n.startswith("Existing")}
    listed = [name for group in groups for name in group["Parameters"]]
    assert sorted(listed) == sorted(template["Parameters"]), "every parameter in one group"


def test_the_example_parameters_pass_the_rules(template: dict[str, Any]) -> None:
    assert Stack(template).broken_rules() == []
    assert Stack(template, EXISTING_DATABASE).broken_rules() == []
    assert Stack(template, EXISTING_DATABASE_NO_SECRET).broken_rules() == []
    with_instance = EXISTING_DATABASE | {"ExistingDatabaseInstanceId": "orders-db-1"}
    assert Stack(template, with_instance).broken_rules() == []


@pytest.mark.parametrize(
    "missing", ["ExistingVpcId", "ExistingSubnetIds", "ExistingDatabaseSecurityGroupId"]
)
def test_a_rule_refuses_an_existing_database_without_its_network(
    template: dict[str, Any], missing: str
) -> None:
    overrides = EXISTING_DATABASE | {missing: ""}
    assert Stack(template, overrides).broken_rules() == ["ExistingDatabaseNeedsItsNetwork"]
    # A subnet list with an empty item (a stray comma) is refused too.
    stray = EXISTING_DATABASE | {"ExistingSubnetIds": f"{SUBNETS[0]},"}
    assert Stack(template, stray).broken_rules() == ["ExistingDatabaseNeedsItsNetwork"]


def test_a_rule_refuses_quota_limit_percent_without_the_secret_that_reads_max_connections(
    template: dict[str, Any],
) -> None:
    no_secret = EXISTING_DATABASE | {"ExistingDatabaseSecretArn": ""}
    assert Stack(template, no_secret).broken_rules() == ["ExistingDatabaseSecretSizesTheQuota"]
    # With a QuotaLimit the seeder never signs in: no secret needed.
    assert Stack(template, no_secret | {"QuotaLimit": "20"}).broken_rules() == []


@pytest.mark.parametrize(
    "stray",
    [
        "ExistingVpcId",
        "ExistingSubnetIds",
        "ExistingDatabaseSecurityGroupId",
        "ExistingDatabaseSecretArn",
        "ExistingDatabaseInstanceId",
    ],
)
def test_a_rule_refuses_existing_parameters_without_the_endpoint(
    template: dict[str, Any], stray: str
) -> None:
    # Else a forgotten endpoint would deploy the demo stack: a new VPC and database.
    overrides = {stray: EXISTING_DATABASE.get(stray, "orders-db-1")}
    assert Stack(template, overrides).broken_rules() == ["ExistingParametersNeedTheEndpoint"]


# ------------------------------------------------------------------ what it makes


def test_it_makes_no_vpc_database_secret_or_demo_function(stack: Stack) -> None:
    assert set(stack.resources) == BESIDE
    kinds = {resource["Type"] for resource in stack.resources.values()}
    assert not {k for k in kinds if k.startswith(("AWS::RDS::", "AWS::SecretsManager::"))}
    assert not kinds & {
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::RouteTable",
        "AWS::EC2::VPCEndpoint",
        "AWS::EC2::FlowLog",
    }
    assert set(stack.of_type(FUNCTION)) == {"HelperFunction", "SeederFunction"}
    # Nothing it makes names a resource only the demo stack has.
    text = json.dumps(stack.resolve(stack.resources))
    for demo_only in set(stack.template["Resources"]) - BESIDE:
        assert f"{demo_only.lower()}-0123456789abcdef" not in text, demo_only


def test_the_demo_stack_makes_all_of_it_and_more(template: dict[str, Any]) -> None:
    demo = Stack(template)
    assert set(demo.resources) == set(template["Resources"])
    assert set(demo.resources) > BESIDE


def test_the_helper_and_the_seeder_run_in_the_given_subnets_in_a_group_of_the_given_vpc(
    stack: Stack,
) -> None:
    group = stack._ref("FunctionSecurityGroup")
    for name in ("HelperFunction", "SeederFunction"):
        vpc_config = stack.functions()[name]["VpcConfig"]
        assert vpc_config == {"SubnetIds": SUBNETS, "SecurityGroupIds": [group]}, name
    properties = stack.resolve(stack.resources["FunctionSecurityGroup"]["Properties"])
    assert properties["VpcId"] == VPC
    assert "SecurityGroupIngress" not in properties  # nothing in
    egress = {
        (rule["IpProtocol"], str(rule["FromPort"]), str(rule["ToPort"])): rule
        for rule in properties["SecurityGroupEgress"]
    }
    assert set(egress) == {("tcp", "443", "443"), ("tcp", PORT, PORT)}
    assert egress["tcp", "443", "443"]["CidrIp"] == "0.0.0.0/0"  # AWS APIs, by whatever route
    assert egress["tcp", PORT, PORT]["DestinationSecurityGroupId"] == DATABASE_GROUP


def test_the_one_rule_added_to_the_databases_group_admits_mysql_from_the_functions(
    stack: Stack,
) -> None:
    rules = [
        stack.resolve(r["Properties"])
        for r in stack.of_type("AWS::EC2::SecurityGroupIngress").values()
    ]
    assert rules == [
        {
            "Description": "MySQL from the connlease functions",
            "GroupId": DATABASE_GROUP,
            "IpProtocol": "tcp",
            "FromPort": PORT,
            "ToPort": PORT,
            "SourceSecurityGroupId": stack._ref("FunctionSecurityGroup"),
        }
    ]
    assert not stack.of_type("AWS::EC2::SecurityGroupEgress")


def test_the_seeder_reaches_the_given_database_with_the_given_secret_over_tls(
    stack: Stack,
) -> None:
    seeder = variables(stack, "SeederFunction")
    assert (seeder["DB_HOST"], seeder["DB_PORT"]) == (ENDPOINT, PORT)
    assert seeder["DB_ADMIN_SECRET_ARN"] == SECRET
    assert seeder["QUOTA_DATABASE"] == QUOTA
    assert seeder["DB_TLS"] == "true"
    assert seeder["DB_CA_BUNDLE"].startswith("/opt/python/")
    # A schema every MySQL user may use: it reads max_connections alone.
    assert seeder["DB_NAME"] == "information_schema"
    # It manages no application user: your database's users are yours.
    assert not {"DB_APP_SECRET_ARN", "DB_APP_REQUIRE_SSL", "DB_SECRET_ARN"} & set(seeder)
    settings = SeederSettings.from_environment(seeder)
    assert not settings.manages_app_user
    assert settings.admin_secret_arn == SECRET
    assert (settings.db_host, settings.db_port) == (ENDPOINT, int(PORT))
    # Its grants: the quota's calls, and reading the given secret; nothing else.
    leases = stack._attribute("LeasesTable", "Arn")
    assert grants(stack.statements(stack.resources["SeederFunction"])) == {
        ("dynamodb:UpdateItem", leases),
        ("dynamodb:GetItem", leases),
        ("dynamodb:BatchGetItem", leases),
        ("dynamodb:DeleteItem", leases),
        ("secretsmanager:GetSecretValue", SECRET),
    }


def test_with_a_quota_limit_and_no_secret_the_seeder_reads_no_secret(
    template: dict[str, Any],
) -> None:
    stack = Stack(template, EXISTING_DATABASE_NO_SECRET)
    seeder = variables(stack, "SeederFunction")
    assert "DB_ADMIN_SECRET_ARN" not in seeder
    assert not [
        s
        for s in stack.statements(stack.resources["SeederFunction"])
        if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]
    properties = stack.resolve(stack.resources["LeaseQuota"]["Properties"])
    assert properties["Limit"] == "20"
    assert "LimitPercent" not in properties
    # So the seeder never connects to MySQL (service.seeder.put_seed: no Employees, no
    # LimitPercent, no application user).
    seed = SeedProperties.of({k: v for k, v in properties.items() if k != "ServiceTimeout"})
    assert not seed.seed_employees
    assert seed.limit_percent is None
    assert not SeederSettings.from_environment(seeder).manages_app_user
    assert "DatabaseSecretArn" not in stack.outputs()


@pytest.mark.parametrize("overrides", [{}, {"QuotaLimit": "12"}], ids=["percent", "limit"])
def test_the_quota_is_written_without_touching_the_databases_schema(
    template: dict[str, Any], overrides: dict[str, str]
) -> None:
    stack = Stack(template, EXISTING_DATABASE | overrides)
    (quota,) = stack.of_type("Custom::LeaseQuota").values()
    properties = stack.resolve(quota["Properties"])
    assert properties["ServiceToken"] == stack._attribute("SeederFunction", "Arn")
    assert properties["Database"] == QUOTA
    assert properties["SeedEmployees"] == "false"  # Employees is the demo's table
    assert "InstanceClass" not in properties  # the demo database's class
    seed = SeedProperties.of({k: v for k, v in properties.items() if k != "ServiceTimeout"})
    assert (seed.limit, seed.limit_percent) == (
        (12, None) if overrides else (None, int(stack.parameter("QuotaLimitPercent")))
    )
    # Its order: after the rule that lets the seeder reach MySQL; the demo's resources
    # only in the demo stack (Metadata, which DependsOn cannot be made conditional as).
    assert quota["DependsOn"] == ["DatabaseFromFunctions"]
    assert stack.resolve(quota["Metadata"]) == {"DemoStackDependsOn": ""}
    demo = Stack(template).resolve(quota["Metadata"])["DemoStackDependsOn"]
    assert Stack(template)._ref("Database") in demo


def test_the_helper_serves_the_quota_and_reads_no_database_setting(stack: Stack) -> None:
    helper = variables(stack, "HelperFunction")
    assert helper["SERVED_DATABASES"] == QUOTA
    assert not {key for key in helper if key.startswith("DB_")}  # it never connects to MySQL
    assert HelperSettings.from_environment(helper).serves(QUOTA)


# ------------------------------------------------------------------ your functions' policies


def test_the_outputs_name_the_policies_and_what_your_function_is_configured_with(
    stack: Stack,
) -> None:
    outputs = stack.outputs()
    assert outputs["InvokeHelperPolicyArn"] == stack._ref("InvokeHelperPolicy")
    assert outputs["DirectLeasesPolicyArn"] == stack._ref("DirectLeasesPolicy")
    assert outputs["InvokeHelperPolicyArn"].startswith("arn:aws:iam::")
    # HELPER_FUNCTION (or LEASES_TABLE_NAME) and QUOTA_DATABASE for your function; the
    # database's address, as given, for the operator's command line (cli/app.py).
    assert outputs["HelperFunctionArn"] == stack._attribute("HelperFunction", "Arn")
    assert outputs["LeasesTableName"] == stack._ref("LeasesTable")
    assert outputs["QuotaDatabase"].startswith(f"{QUOTA}: ")
    assert (outputs["DatabaseEndpoint"], outputs["DatabasePort"]) == (ENDPOINT, PORT)
    assert outputs["DatabaseSecretArn"] == SECRET
    assert outputs["PrivateSubnetIds"] == ",".join(SUBNETS)
    assert outputs["FunctionSecurityGroupId"] == stack._ref("FunctionSecurityGroup")
    # The demo's alone are not there.
    assert not {"AppUserSecretArn", "TestFunctionName", "HarnessFunctionName"} & set(outputs)


def test_the_invoke_policy_allows_invoking_the_helper_alone(stack: Stack) -> None:
    policy = stack.resources["InvokeHelperPolicy"]
    assert grants(stack.statements(policy)) == {
        ("lambda:InvokeFunction", stack._attribute("HelperFunction", "Arn"))
    }
    assert QUOTA in stack.resolve(policy["Properties"]["Description"])


def test_the_direct_policy_allows_the_quotas_items_alone_as_the_helpers_grant_does(
    stack: Stack,
) -> None:
    leases = stack._attribute("LeasesTable", "Arn")
    (statement,) = stack.statements(stack.resources["DirectLeasesPolicy"])
    (helper,) = (
        s for s in stack.statements(stack.resources["HelperFunction"]) if s["Resource"] == leases
    )
    assert {k: v for k, v in statement.items() if k != "Sid"} == {
        k: v for k, v in helper.items() if k != "Sid"
    }
    patterns = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    for key in (QUOTA, shard_item(QUOTA, 3), reserved_quota(QUOTA, "api")):
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), key
    assert not any(fnmatch.fnmatchcase("billing-mysql", p) for p in patterns)


# ------------------------------------------------------------------ alarms and dashboard


def alarm_dimensions(stack: Stack) -> dict[str, list[dict[str, str]]]:
    return {
        name: stack.resolve(alarm["Properties"]["Dimensions"])
        for name, alarm in stack.of_type("AWS::CloudWatch::Alarm").items()
    }


def test_the_lease_alarms_watch_the_helper_whatever_lease_mode_says(
    template: dict[str, Any],
) -> None:
    for lease_mode in ("lambda", "direct"):
        stack = Stack(template, EXISTING_DATABASE | {"LeaseMode": lease_mode})
        for name in (
            "NoConnectionsLeftAlarm",
            "LowRemainingConnectionsAlarm",
            "LeasesReclaimedAlarm",
        ):
            assert alarm_dimensions(stack)[name] == [
                {"Name": "database", "Value": QUOTA},
                {"Name": "service", "Value": "connlease-helper"},
            ], (lease_mode, name)


def test_without_an_instance_id_there_is_no_connections_alarm_and_the_graph_searches_rds(
    stack: Stack,
) -> None:
    assert "DatabaseConnectionsOverQuotaAlarm" not in stack.resources
    (graph,) = (w for w in dashboard(stack)["widgets"] if "DatabaseConnections" in json.dumps(w))
    ((row,),) = graph["properties"]["metrics"]
    assert row["expression"] == (
        "SEARCH('{AWS/RDS,DBInstanceIdentifier} MetricName=\"DatabaseConnections\"', 'Maximum', 60)"
    )


def test_with_an_instance_id_the_connections_alarm_and_graph_watch_that_instance(
    template: dict[str, Any],
) -> None:
    stack = Stack(template, EXISTING_DATABASE | {"ExistingDatabaseInstanceId": "orders-db-1"})
    dimensions = alarm_dimensions(stack)["DatabaseConnectionsOverQuotaAlarm"]
    assert dimensions == [{"Name": "DBInstanceIdentifier", "Value": "orders-db-1"}]
    (graph,) = (w for w in dashboard(stack)["widgets"] if "DatabaseConnections" in json.dumps(w))
    assert graph["properties"]["metrics"] == [
        [
            "AWS/RDS",
            "DatabaseConnections",
            "DBInstanceIdentifier",
            "orders-db-1",
            {"stat": "Maximum", "period": 60, "label": "connections"},
        ]
    ]


def test_the_dashboard_graphs_the_helper_and_the_seeder(stack: Stack) -> None:
    (graph,) = (w for w in dashboard(stack)["widgets"] if "AWS/Lambda" in json.dumps(w))
    assert graph["properties"]["title"].startswith("Helper and seeder:")
    named = [row[3] for row in graph["properties"]["metrics"] if row[3] != "."]
    assert named == [stack._ref("HelperFunction"), stack._ref("SeederFunction")]
