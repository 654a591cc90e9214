"""infra/template.yaml and a change of the database's instance class: LeaseQuota carries the
class, so CloudFormation sends the seeder an Update that takes LimitPercent of the new
max_connections, and runs it after Database's own update. Offline: the template is read
as YAML and resolved as in test_template."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from service.seeder import SeedProperties
from tests.unit.test_template import Stack, as_list, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def lease_quota(stack: Stack) -> str:
    (name,) = stack.of_type("Custom::LeaseQuota")
    return name


def references(node: Any, resources: set[str]) -> Iterator[str]:
    """The resources `node` names: Ref, GetAtt, and Sub's ${Name} and ${Name.Attribute}."""
    if isinstance(node, list):
        for item in node:
            yield from references(item, resources)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "Ref" and value in resources:
            yield value
        elif key == "Fn::GetAtt":
            yield value[0]
        elif key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            for name in re.findall(r"\$\{([^}!.]+)", text):
                if name in resources:
                    yield name
            yield from references(value, resources)
        else:
            yield from references(value, resources)


def dependencies(template: dict[str, Any], name: str) -> set[str]:
    """Every resource CloudFormation creates or updates before `name`: its DependsOn and
    the resources its properties and its metadata name (a reference in Metadata orders
    them too: the template's way to a DependsOn that only one mode has), and theirs in
    turn."""
    resources = template["Resources"]
    found: set[str] = set()
    pending = [name]
    while pending:
        resource = resources[pending.pop()]
        direct = set(as_list(resource.get("DependsOn", [])))
        direct |= set(references(resource.get("Properties", {}), set(resources)))
        direct |= set(references(resource.get("Metadata", {}), set(resources)))
        pending += sorted(direct - found)
        found |= direct
    return found


@pytest.mark.parametrize("instance_class", [None, "db.r6g.large"])
def test_lease_quota_carries_the_database_instance_class(
    template: dict[str, Any], instance_class: str | None
) -> None:
    overrides = {} if instance_class is None else {"DatabaseInstanceClass": instance_class}
    stack = Stack(template, overrides)
    quota = stack.resources[lease_quota(stack)]["Properties"]

    # The demo stack's database's class; beside an existing database, none (there it is
    # not the stack's to change).
    assert quota["InstanceClass"] == {
        "Fn::If": ["CreatesDatabase", {"Ref": "DatabaseInstanceClass"}, {"Ref": "AWS::NoValue"}]
    }
    database = stack.resolve(stack.resources["Database"]["Properties"])
    properties = stack.resolve(quota)
    assert properties["InstanceClass"] == database["DBInstanceClass"]
    assert properties["InstanceClass"] == (instance_class or "db.t4g.micro")
    # What the seeder reads of it: a known property, recorded.
    seed = SeedProperties.of({k: v for k, v in properties.items() if k != "ServiceTimeout"})
    assert seed.instance_class == properties["InstanceClass"]


def test_lease_quota_updates_after_the_database(template: dict[str, Any]) -> None:
    stack = Stack(template)
    name = lease_quota(stack)

    assert "Database" in dependencies(template, name)
    # And after the paths the seeder takes to DynamoDB, S3 (its answer), Secrets Manager
    # and MySQL.
    assert {
        "DatabaseFromFunctions",
        "DynamoDbEndpoint",
        "S3Endpoint",
        "SecretsManagerEndpoint",
        "PrivateSubnetARoutes",
        "PrivateSubnetBRoutes",
    } <= dependencies(template, name)
    # Not the other way round, which would be a cycle and would update it first.
    assert name not in dependencies(template, "Database")


def test_the_dependencies_follow_depends_on_refs_and_attributes() -> None:
    template = {
        "Resources": {
            "A": {"DependsOn": "B", "Properties": {}},
            "B": {"Properties": {"X": {"Fn::Sub": "${C.Arn}/${AWS::Region}"}}},
            "C": {"Properties": {"Y": {"Fn::GetAtt": ["D", "Endpoint.Address"]}}},
            "D": {"Properties": {"Z": {"Ref": "SomeParameter"}}},
            "E": {"Properties": {"W": {"Ref": "A"}}},
            "F": {"Metadata": {"After": {"Fn::If": ["Cond", [{"Ref": "D"}], ""]}}},
        }
    }

    assert dependencies(template, "A") == {"B", "C", "D"}
    assert dependencies(template, "E") == {"A", "B", "C", "D"}
    assert dependencies(template, "D") == set()
    assert dependencies(template, "F") == {"D"}
