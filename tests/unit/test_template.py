"""infra/template.yaml against the code it deploys: handlers, environment, grants, tables,
metrics. Offline and fast: the template is read as YAML, intrinsic functions are resolved
with the parameters' defaults (or the overrides a test names) and placeholder values.

The template deploys two ways: the demo stack (the defaults) and beside an existing
database (EXISTING_DATABASE's parameters); the tests that hold for both run on each
(SCENARIOS), and tests/unit/test_template_existing_database.py holds what is particular
to the second."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.dynamodb import KEY_SCHEMA
from adapters.emf import DIMENSION, GROUP_DIMENSION
from domain import Metric
from domain.groups import reserved_quota
from domain.shards import shard_item
from service.seeder import SeedProperties
from service.settings import (
    EnvironmentSettings,
    HarnessSettings,
    HelperSettings,
    SeederSettings,
    WorkloadSettings,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
PYPROJECT = ROOT / "pyproject.toml"

FUNCTION = "AWS::Serverless::Function"
LAYER = "AWS::Serverless::LayerVersion"

# Which settings each handler reads (its module builds exactly this class).
SETTINGS: dict[str, type[EnvironmentSettings]] = {
    "service.helper.handler": HelperSettings,
    "service.workload.handler": WorkloadSettings,
    "service.harness.handler": HarnessSettings,
    "service.seeder.handler": SeederSettings,
}

# Variables a function reads that the template leaves to their defaults in AWS, and why.
OFF_AWS_ONLY = {"DYNAMODB_ENDPOINT_URL"}  # in AWS the SDK finds the regional endpoint
FROM_THE_SECRET = {"DB_USER", "DB_PASSWORD"}  # DB_SECRET_ARN supplies both
LEFT_TO_DEFAULTS: dict[str, set[str]] = {
    # Idempotency window, the quota's own TTL and the timeout margin are the code's defaults.
    "HelperFunction": OFF_AWS_ONLY
    | {"IDEMPOTENCY_EXPIRY_S", "DEFAULT_LEASE_TTL_MS", "TIMEOUT_MARGIN_MS"},
    "TestFunction": OFF_AWS_ONLY | FROM_THE_SECRET | {"DB_CONNECT_TIMEOUT_S", "SAFETY_MARGIN_MS"},
    "HarnessFunction": {"MAX_CONCURRENCY"},
    # The seeder signs in with DB_ADMIN_SECRET_ARN (DB_SECRET_ARN is its older name), and
    # DB_APP_SECRET_ARN names the application user and its password.
    "SeederFunction": OFF_AWS_ONLY
    | FROM_THE_SECRET
    | {"DB_CONNECT_TIMEOUT_S", "DB_SECRET_ARN", "DB_APP_USER", "DB_APP_PASSWORD"},
}
# Beside an existing database the seeder manages no application user (your database's
# users are yours), and with a QuotaLimit it may have no secret: it never signs in.
NO_APP_USER = {"DB_APP_SECRET_ARN", "DB_APP_REQUIRE_SSL"}
# Read by Powertools itself rather than by a settings class.
POWERTOOLS_ONLY = {"POWERTOOLS_LOG_LEVEL"}

REGION = "eu-west-1"
ACCOUNT = "123456789012"
STACK = "connlease"

# A stack beside an existing database: the parameters infra/README.md's deploy command
# gives (example values).
EXISTING_DATABASE = {
    "ExistingDatabaseEndpoint": "orders.c0ffee0c0ffee.eu-west-1.rds.amazonaws.com",
    "ExistingDatabasePort": "3307",
    "ExistingDatabaseSecretArn": (
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:orders-db-reader-AbCdEf"
    ),
    "ExistingVpcId": "vpc-0a1b2c3d4e5f67890",
    "ExistingSubnetIds": "subnet-0a1b2c3d4e5f60718,subnet-0f1e2d3c4b5a69788",
    "ExistingDatabaseSecurityGroupId": "sg-0aa11bb22cc33dd44",
    "QuotaDatabase": "orders-mysql",
}
# Beside it with a fixed QuotaLimit: the seeder never signs in, so no secret is given.
EXISTING_DATABASE_NO_SECRET = {
    key: value for key, value in EXISTING_DATABASE.items() if key != "ExistingDatabaseSecretArn"
} | {"QuotaLimit": "20"}
# The two ways to deploy, and the variants the tests that hold for both run on.
MODES = {"demo": {}, "existing": EXISTING_DATABASE}
SCENARIOS = {
    "demo-lambda": {"LeaseMode": "lambda"},
    "demo-direct": {"LeaseMode": "direct"},
    "existing": EXISTING_DATABASE,
    # LeaseMode is the demo's test function's: beside a database it changes nothing.
    "existing-direct": EXISTING_DATABASE | {"LeaseMode": "direct"},
    "existing-no-secret": EXISTING_DATABASE_NO_SECRET,
}


# ------------------------------------------------------------------ reading the template


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (`!Ref x`, `!GetAtt a.b`, `!Sub ...`), read
    into their long forms (`{"Ref": x}`, `{"Fn::GetAtt": [a, b]}`, `{"Fn::Sub": ...}`)."""


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=_CfnLoader)  # a SafeLoader
    assert isinstance(loaded, dict)
    return loaded


NO_VALUE = object()


@dataclass
class Stack:
    """The template as CloudFormation would see it for some parameter values: conditions
    evaluated, `!If` branches taken, references replaced by plausible placeholders."""

    template: dict[str, Any]
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        """The resources this stack has: those whose Condition holds, or that have none."""
        return {
            name: resource
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def outputs(self) -> dict[str, Any]:
        """The outputs this stack has, their values resolved."""
        return {
            name: self.resolve(output["Value"])
            for name, output in self.template.get("Outputs", {}).items()
            if "Condition" not in output or self.condition(output["Condition"])
        }

    def broken_rules(self) -> list[str]:
        """The Rules that would refuse these parameter values (CloudFormation checks them
        before it creates or updates anything)."""
        broken = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self._evaluate(rule["RuleCondition"]):
                continue
            if not all(self._evaluate(a["Assert"]) for a in rule["Assertions"]):
                broken.append(name)
        return broken

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r["Type"] == kind}

    def parameter(self, name: str) -> str:
        if name in self.overrides:
            return self.overrides[name]
        return str(self.template["Parameters"][name]["Default"])

    def condition(self, name: str) -> bool:
        return bool(self._evaluate(self.template["Conditions"][name]))

    def _evaluate(self, node: Any) -> Any:
        """A condition's value, or a rule's: Conditions' functions and Rules' own."""
        if not (isinstance(node, dict) and len(node) == 1):
            return self.resolve(node)
        ((key, args),) = node.items()

        def members(at: int) -> list[str]:
            return [str(v) for v in self.resolve(args[at])]

        functions: dict[str, Callable[[], Any]] = {
            "Fn::Equals": lambda: str(self.resolve(args[0])) == str(self.resolve(args[1])),
            "Fn::Not": lambda: not self._evaluate(args[0]),
            "Fn::And": lambda: all(self._evaluate(arg) for arg in args),
            "Fn::Or": lambda: any(self._evaluate(arg) for arg in args),
            "Condition": lambda: self.condition(args),
            "Fn::Contains": lambda: str(self.resolve(args[1])) in members(0),
            "Fn::EachMemberEquals": lambda: set(members(0)) <= {str(self.resolve(args[1]))},
        }
        return functions[key]() if key in functions else self.resolve(node)

    def resolve(self, node: Any) -> Any:
        """Resolves intrinsic functions anywhere in `node`; `!If` takes its branch and
        `AWS::NoValue` removes the key or item it stands in."""
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, args),) = node.items()
            if key == "Ref" or key.startswith("Fn::"):
                return self._intrinsic(key, args)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _intrinsic(self, key: str, args: Any) -> Any:
        functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::GetAtt": lambda args: self._attribute(args[0], args[1]),
            "Fn::If": lambda args: self.resolve(args[1] if self.condition(args[0]) else args[2]),
            "Fn::Sub": self._sub,
            "Fn::Join": lambda args: args[0].join(str(part) for part in self.resolve(args[1])),
        }
        if key in functions:
            return functions[key](args)
        return f"<{key}>"  # Fn::Select, Fn::GetAZs, Fn::Cidr: values only AWS knows

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::NoValue": NO_VALUE,
            "AWS::StackName": STACK,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template["Parameters"]:
            if self.template["Parameters"][name]["Type"] == "CommaDelimitedList":
                return self.parameter(name).split(",")
            return self.parameter(name)
        kind = self.resources[name]["Type"]
        if kind == FUNCTION:
            return self.resolve(self.resources[name]["Properties"]["FunctionName"])
        return {
            "AWS::DynamoDB::Table": f"{STACK}-{name}-1A2B3C4D5E6F",
            # A secret's Ref, and a managed policy's, is its ARN.
            "AWS::SecretsManager::Secret": (
                f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-1a2b3c4d-XyZ123"
            ),
            "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-{name}-1A2B3C4D5E6F",
        }.get(kind, f"{name.lower()}-0123456789abcdef")

    def _attribute(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        arns = {
            FUNCTION: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self._ref(name)}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self._ref(name)}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self._ref(name)}:*",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if kind == "AWS::RDS::DBInstance":
            return {
                "Endpoint.Address": f"{name.lower()}.c0ffee.{REGION}.rds.amazonaws.com",
                "Endpoint.Port": "3306",
                "MasterUserSecret.SecretArn": (
                    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-0000-AbCdEf"
                ),
            }[attribute]
        return f"<{name}.{attribute}>"

    def _sub(self, args: Any) -> str:
        text, variables = (args, {}) if isinstance(args, str) else args

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self._attribute(resource, attribute)
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def functions(self) -> dict[str, dict[str, Any]]:
        """Each function's properties with the Globals merged in, resolved."""
        defaults = self.template.get("Globals", {}).get("Function", {})
        merged = {}
        for name, resource in self.of_type(FUNCTION).items():
            properties = {**defaults, **resource["Properties"]}
            variables = {
                **defaults.get("Environment", {}).get("Variables", {}),
                **resource["Properties"].get("Environment", {}).get("Variables", {}),
            }
            properties["Environment"] = {"Variables": variables}
            merged[name] = self.resolve(properties)
        return merged

    def statements(self, resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every IAM statement of a function's or a role's policies, or of a managed
        policy, resolved."""
        properties = resource["Properties"]
        documents = []
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append(properties["PolicyDocument"])
        for policy in properties.get("Policies", []):
            documents.append(policy.get("PolicyDocument", policy))
        for document in self.resolve(documents):
            yield from document["Statement"]


def grants(statements: Iterator[dict[str, Any]]) -> set[tuple[str, str]]:
    """(action, resource) pairs of Allow statements."""
    pairs = set()
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                pairs.add((action, resource))
    return pairs


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Stack:
    return Stack(template)


@pytest.fixture(scope="module", params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    """Each way to deploy: "demo" or "existing"."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def mode_stack(template: dict[str, Any], mode: str) -> Stack:
    return Stack(template, MODES[mode])


def creates_database(stack: Stack) -> bool:
    return stack.condition("CreatesDatabase")


# The functions each way to deploy has: beside an existing database, no test function and
# no harness (your functions take their place).
DEMO_FUNCTIONS = {"HelperFunction", "TestFunction", "HarnessFunction", "SeederFunction"}
BESIDE_FUNCTIONS = {"HelperFunction", "SeederFunction"}


LEASE_MODES = ["lambda", "direct"]
# What the Makefile's build-<Function> targets copy: the hexagon's three packages and the
# helper's wire contract.
LAMBDA_PACKAGES = ("domain", "adapters", "service", "connlease_client")


# ------------------------------------------------------------------ packaging


def test_every_handler_resolves_to_a_callable_in_the_code_sam_build_packages(
    mode_stack: Stack,
) -> None:
    functions = mode_stack.functions()
    expected = DEMO_FUNCTIONS if creates_database(mode_stack) else BESIDE_FUNCTIONS
    assert set(functions) == expected
    for name, properties in functions.items():
        code = (TEMPLATE.parent / properties["CodeUri"]).resolve()
        module_name, _, attribute = properties["Handler"].rpartition(".")
        module = importlib.import_module(module_name)
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().is_relative_to(code), (
            f"{name}: {module_name} is not under its CodeUri {code}"
        )
        assert (code / Path(*module_name.split("."))).with_suffix(".py").is_file()
        assert callable(getattr(module, attribute, None)), f"{name}: {attribute} is not callable"


def test_sam_build_packages_the_lambda_packages_and_the_handlers_import_from_them(
    stack: Stack, tmp_path: Path
) -> None:
    # What `sam build` runs for each function (BuildMethod: makefile, CodeUri the root).
    for name, properties in stack.functions().items():
        metadata = stack.resources[name].get("Metadata", {})
        assert metadata.get("BuildMethod") == "makefile", name
        artifacts = tmp_path / name
        subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), f"build-{name}"],
            # Source alone here (no Lambda Python to compile with): what is packaged is the
            # question; tests/unit/test_bytecode_build.py checks the compiling.
            env=os.environ | {"ARTIFACTS_DIR": str(artifacts), "LAMBDA_PYTHON": ""},
            check=True,
            capture_output=True,
        )
        assert {p.name for p in artifacts.iterdir()} == set(LAMBDA_PACKAGES)
        assert not list(artifacts.rglob("__pycache__"))
        module = properties["Handler"].rpartition(".")[0]
        # Imported from the package alone, as Lambda does (its dependencies from this venv,
        # as from the layer): no test, local-stack or example code is needed, and every
        # module of the packages it imports comes from the artifact, not the repository.
        probe = (
            f"import sys; sys.path.insert(0, {str(artifacts)!r}); import {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('local', 'tests', 'examples', 'benchmarks', 'reliability')))"
            f"; print(sorted(m for m, v in list(sys.modules.items()) if m.split('.')[0] in "
            f"{LAMBDA_PACKAGES!r} and not (getattr(v, '__file__', None) or '')"
            f".startswith({str(artifacts)!r})))"
            f"; print({module}.__file__)"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=tmp_path,
            env=os.environ | {"LAMBDA_TASK_ROOT": str(artifacts)},
            capture_output=True,
            text=True,
            check=True,
        )
        imported_beyond, not_packaged, module_file = result.stdout.splitlines()[-3:]
        assert imported_beyond == "[]", name
        assert not_packaged == "[]", name
        assert Path(module_file).is_relative_to(artifacts), name


def makefile_variable(name: str) -> str:
    """A `NAME := value` (or `?=`) of the root Makefile."""
    (value,) = re.findall(rf"^{name} [:?]?= *(.+)$", (ROOT / "Makefile").read_text(), re.M)
    return str(value).strip()


def test_the_layer_installs_exactly_the_runtime_dependencies_of_pyproject(stack: Stack) -> None:
    # The layer is built from the repository root by the Makefile's build-DependenciesLayer
    # (tests/unit/test_layer_build.py), from its LAYER_REQUIREMENTS.
    (layer,) = stack.of_type(LAYER).values()
    assert (TEMPLATE.parent / layer["Properties"]["ContentUri"]).resolve() == ROOT
    requirements = ROOT / makefile_variable("LAYER_REQUIREMENTS")
    listed = [line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines()]
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]

    def normal(requirement: str) -> str:
        return re.sub(r"\s+", "", requirement).lower()

    assert sorted(normal(r) for r in listed if r) == sorted(normal(r) for r in declared)


def test_functions_and_their_layer_agree_on_runtime_and_architecture(stack: Stack) -> None:
    ((layer_name, layer),) = stack.of_type(LAYER).items()
    built_for = layer["Metadata"]
    # The Makefile's pip install picks the wheels: for this Python and arm64 (aarch64).
    assert built_for["BuildMethod"] == "makefile"
    assert makefile_variable("LAYER_PLATFORM").endswith("_aarch64")
    for name, properties in stack.functions().items():
        runtime = properties["Runtime"]
        assert re.fullmatch(r"python3\.1[3-9]", runtime), f"{name}: {runtime}"
        assert properties["Architectures"] == ["arm64"], name
        assert properties["Layers"] == [stack._ref(layer_name)], name
        assert runtime == f"python{makefile_variable('LAMBDA_PYTHON_VERSION')}"
        assert built_for["BuildArchitecture"] == "arm64"
        assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_every_function_traces_logs_with_retention_and_runs_in_the_private_subnets(
    mode_stack: Stack,
) -> None:
    stack = mode_stack
    if creates_database(stack):
        subnets = [stack._ref("PrivateSubnetA"), stack._ref("PrivateSubnetB")]
    else:  # the existing database's, as given
        subnets = EXISTING_DATABASE["ExistingSubnetIds"].split(",")
    log_groups = stack.of_type("AWS::Logs::LogGroup")
    assert len(log_groups) == len(stack.functions()) + creates_database(stack)  # + flow logs
    for name, properties in stack.functions().items():
        assert properties["Tracing"] == "Active", name
        group = properties["LoggingConfig"]["LogGroup"]
        (group_name,) = (n for n in log_groups if stack._ref(n) == group)
        assert "RetentionInDays" in log_groups[group_name]["Properties"], name
        vpc = properties["VpcConfig"]
        assert vpc["SubnetIds"] == subnets, name
        assert vpc["SecurityGroupIds"] == [stack._ref("FunctionSecurityGroup")]


# ------------------------------------------------------------------ environment


def environments(stack: Stack) -> Iterator[tuple[str, type[EnvironmentSettings], dict[str, str]]]:
    for name, properties in stack.functions().items():
        variables = {
            key: str(value) for key, value in properties["Environment"]["Variables"].items()
        }
        yield name, SETTINGS[properties["Handler"]], variables


def left_to_defaults(stack: Stack, name: str) -> set[str]:
    """The variables `name` reads that this stack deliberately leaves unset."""
    unset = set(LEFT_TO_DEFAULTS[name])
    if name == "TestFunction":  # one way to the quota, per LeaseMode
        direct = stack.condition("DirectLeases")
        unset |= {"HELPER_FUNCTION"} if direct else {"LEASES_TABLE_NAME"}
    if name == "SeederFunction" and not creates_database(stack):
        unset |= NO_APP_USER
        if not stack.condition("SeederReadsSecrets"):
            unset.add("DB_ADMIN_SECRET_ARN")
    return unset


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_variable_a_handler_reads_is_set_or_deliberately_left_to_its_default(
    template: dict[str, Any], scenario: str
) -> None:
    stack = Stack(template, SCENARIOS[scenario])
    for name, settings, variables in environments(stack):
        read = {variable.upper() for variable in settings.model_fields}
        unset = left_to_defaults(stack, name)
        missing = read - set(variables) - unset
        assert not missing, f"{name} reads {sorted(missing)} but the template does not set them"
        assert not (unset & set(variables)), f"{name} sets {sorted(unset & set(variables))}"
        unknown = set(variables) - read - POWERTOOLS_ONLY
        assert not unknown, f"{name} sets {sorted(unknown)}, which its code never reads"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_function_settings_parse_from_the_environment_the_template_gives_it(
    template: dict[str, Any], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(template, SCENARIOS[scenario])
    for name, settings, variables in environments(stack):
        for variable in settings.model_fields:
            monkeypatch.delenv(variable.upper(), raising=False)
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        parsed = settings.from_environment()
        for key, value in variables.items():
            if key.lower() not in settings.model_fields:
                continue
            got = getattr(parsed, key.lower())
            if isinstance(got, bool):
                assert got is (value == "true"), (name, key)
            elif isinstance(got, int | float):
                assert got == float(value), (name, key)
            else:
                assert got == value, (name, key)


def test_functions_that_connect_to_mysql_use_their_own_secrets_over_tls(stack: Stack) -> None:
    functions = stack.functions()
    master = stack._attribute("Database", "MasterUserSecret.SecretArn")
    app = stack._ref("AppUserSecret")
    test = functions["TestFunction"]["Environment"]["Variables"]
    assert test["DB_SECRET_ARN"] == app  # the application user, not the master user
    seeder = functions["SeederFunction"]["Environment"]["Variables"]
    assert seeder["DB_ADMIN_SECRET_ARN"] == master
    assert seeder["DB_APP_SECRET_ARN"] == app
    assert seeder["DB_APP_REQUIRE_SSL"] == "true"
    assert "DB_SECRET_ARN" not in seeder
    for name in ("TestFunction", "SeederFunction"):
        variables = functions[name]["Environment"]["Variables"]
        assert variables["DB_TLS"] == "true"
        assert variables["DB_CA_BUNDLE"].startswith("/opt/python/"), (
            "the layer's build copies the bundle into its python/ folder, mounted at /opt/python"
        )
    database = stack.resources["Database"]["Properties"]
    assert database["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in database
    assert database["StorageEncrypted"] is True
    assert database["PubliclyAccessible"] is False
    parameters = stack.resources["DatabaseParameters"]["Properties"]["Parameters"]
    assert parameters["require_secure_transport"] == "1"


# What RDS refuses in a MySQL password (/ ' " @ and spaces), and what needs escaping
# wherever it is quoted.
PASSWORD_EXCLUDES = set("/'\"@\\`")


def test_the_app_user_secret_is_generated_attached_to_the_instance_and_rotated_weekly(
    stack: Stack,
) -> None:
    secret = stack.resolve(stack.resources["AppUserSecret"]["Properties"])
    generate = secret["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"username": "connlease_app"}
    assert generate["GenerateStringKey"] == "password"
    assert generate["PasswordLength"] >= 32
    assert set(generate["ExcludeCharacters"]) >= PASSWORD_EXCLUDES
    assert generate.get("IncludeSpace", False) is False
    assert "SecretString" not in secret

    (attachment_name, attachment), *others = stack.of_type(
        "AWS::SecretsManager::SecretTargetAttachment"
    ).items()
    assert not others
    assert stack.resolve(attachment["Properties"]) == {
        "SecretId": stack._ref("AppUserSecret"),
        "TargetId": stack._ref("Database"),
        "TargetType": "AWS::RDS::DBInstance",
    }

    ((rotation_name, rotation),) = stack.of_type("AWS::SecretsManager::RotationSchedule").items()
    # The SecretsManager transform makes the function, before SAM makes the others.
    assert stack.template["Transform"][0].startswith("AWS::SecretsManager-")
    assert stack.template["Transform"][-1] == "AWS::Serverless-2016-10-31"
    # The secret carries the host when it first rotates, and the user exists by then.
    assert {attachment_name, "LeaseQuota"} <= set(rotation["DependsOn"])
    properties = stack.resolve(rotation["Properties"])
    assert properties["SecretId"] == stack._ref("AppUserSecret")
    assert properties["RotationRules"] == {"AutomaticallyAfterDays": 7}
    hosted = properties["HostedRotationLambda"]
    assert hosted["RotationType"] == "MySQLSingleUser"
    assert set(hosted["ExcludeCharacters"]) == set(generate["ExcludeCharacters"])
    subnets = [stack._ref("PrivateSubnetA"), stack._ref("PrivateSubnetB")]
    assert hosted["VpcSubnetIds"] == ",".join(subnets)
    assert hosted["VpcSecurityGroupIds"] == stack._ref("RotationSecurityGroup"), rotation_name


def test_every_function_names_its_powertools_service_and_metrics_namespace(
    mode_stack: Stack,
) -> None:
    stack = mode_stack
    for name, properties in stack.functions().items():
        variables = properties["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == properties["FunctionName"], name
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == stack.parameter("MetricsNamespace")


def test_the_seeder_resource_passes_only_properties_the_seeder_knows(mode_stack: Stack) -> None:
    stack = mode_stack
    known = {f.alias for f in SeedProperties.model_fields.values()} | {"ServiceToken"}
    (quota,) = stack.of_type("Custom::LeaseQuota").values()
    for overrides in ({}, {"QuotaLimit": "5"}):
        properties = Stack(stack.template, {**stack.overrides, **overrides}).resolve(
            quota["Properties"]
        )
        assert set(properties) - {"ServiceTimeout"} <= known
        assert ("Limit" in properties) != ("LimitPercent" in properties), properties
        SeedProperties.of({k: v for k, v in properties.items() if k != "ServiceTimeout"})


# ------------------------------------------------------------------ least privilege


def all_statements(stack: Stack) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in stack.resources.items():
        if resource["Type"] in {FUNCTION, "AWS::IAM::Role", "AWS::IAM::ManagedPolicy"}:
            for statement in stack.statements(resource):
                yield name, statement
        if resource["Type"] == "AWS::EC2::VPCEndpoint":
            document = stack.resolve(resource["Properties"]["PolicyDocument"])
            for statement in document["Statement"]:
                yield name, statement


# Actions that name no resource, so a statement can allow them on "*" alone; each only
# where a caller needs it.
RESOURCELESS = {
    # The rotation function's new password, through the Secrets Manager endpoint.
    ("SecretsManagerEndpoint", "secretsmanager:GetRandomPassword"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_statement_grants_a_wildcard_action_or_every_resource(
    template: dict[str, Any], scenario: str
) -> None:
    stack = Stack(template, SCENARIOS[scenario])
    for name, statement in all_statements(stack):
        actions = as_list(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{name}: {action}"
        if all((name, action) in RESOURCELESS for action in actions):
            assert statement["Resource"] == "*", f"{name}: {statement}"
            continue
        for resource in as_list(statement["Resource"]):
            assert resource != "*", f"{name}: {statement}"
            assert resource.startswith("arn:aws:"), f"{name}: {resource}"


def lease_callers(stack: Stack) -> list[str]:
    """What takes leases of the stack's quota: the helper, the direct-mode policy your
    functions attach, and the demo's test function in direct mode."""
    callers = ["HelperFunction", "DirectLeasesPolicy"]
    if stack.condition("TestFunctionRecordsLeases"):
        callers.append("TestFunction")
    return callers


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_lease_calls_of_the_helper_and_the_test_function_touch_only_their_database(
    template: dict[str, Any], scenario: str
) -> None:
    # The quota item's key is the database, a split quota's shard items' <database>#<i>
    # (domain.shards.shard_item), its groups' shares' <database>~<group>[~max] (with shards
    # of their own); '#', '~', '*' and '?' are not in a database's name.
    stack = Stack(template, SCENARIOS[scenario] | {"QuotaDatabase": "orders-mysql"})
    scoped = {
        "ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": ["orders-mysql", "orders-mysql#*", "orders-mysql~*"]
        }
    }
    assert shard_item("orders-mysql", 3) == "orders-mysql#3"
    assert reserved_quota("orders-mysql", "api") == "orders-mysql~api"
    leases = arn(stack, "LeasesTable")
    for name in lease_callers(stack):
        on_leases = [
            s for s in stack.statements(stack.resources[name]) if leases in as_list(s["Resource"])
        ]
        assert on_leases, name
        for statement in on_leases:
            assert statement.get("Condition") == scoped, f"{name}: {statement}"


def test_functions_get_only_inline_policies_no_managed_ones_or_sam_templates(
    stack: Stack,
) -> None:
    for name, resource in stack.of_type(FUNCTION).items():
        properties = resource["Properties"]
        assert "Role" not in properties, name
        for policy in properties.get("Policies", []):
            assert isinstance(policy, dict), f"{name}: managed policy {policy}"
            assert set(policy) == {"Version", "Statement"}, f"{name}: {policy}"


def arn(stack: Stack, resource: str, attribute: str = "Arn") -> str:
    return stack._attribute(resource, attribute)


def expected_grants(stack: Stack) -> dict[str, set[tuple[str, str]]]:
    """What each function's code calls (DynamoDBLeaseStore, Powertools idempotency,
    Parameters' get_secret, LambdaLeases, the harness), on what; and what the managed
    policies give your functions: the client library's calls in each of its two modes."""
    leases, idempotency = arn(stack, "LeasesTable"), arn(stack, "IdempotencyTable")
    # acquire, release and renew are UpdateItem; status, and a refusal that returns no
    # item, a consistent GetItem; a split quota's shards are read with one BatchGetItem.
    lease_calls = {
        ("dynamodb:UpdateItem", leases),
        ("dynamodb:GetItem", leases),
        ("dynamodb:BatchGetItem", leases),
    }
    invoke_helper = {("lambda:InvokeFunction", arn(stack, "HelperFunction"))}
    expected = {
        "HelperFunction": lease_calls
        | {
            (f"dynamodb:{a}", idempotency)
            for a in ("PutItem", "GetItem", "UpdateItem", "DeleteItem")
        },
        "InvokeHelperPolicy": invoke_helper,
        "DirectLeasesPolicy": lease_calls,
    }
    # set_quota (UpdateItem, GetItem when no item comes back) and delete_quota.
    seeder = lease_calls | {("dynamodb:DeleteItem", leases)}
    if not creates_database(stack):
        # Beside an existing database: the given secret's user reads max_connections, when
        # there is a secret; no application user.
        if stack.condition("ReadsExistingSecret"):
            seeder.add(
                ("secretsmanager:GetSecretValue", stack.parameter("ExistingDatabaseSecretArn"))
            )
        return expected | {"SeederFunction": seeder}
    master, app = arn(stack, "Database", "MasterUserSecret.SecretArn"), stack._ref("AppUserSecret")
    way = lease_calls if stack.condition("DirectLeases") else invoke_helper
    return expected | {
        "TestFunction": way | {("secretsmanager:GetSecretValue", app)},
        "HarnessFunction": {("lambda:InvokeFunction", arn(stack, "TestFunction"))},
        # The master user's secret to sign in, the app user's to create that user.
        "SeederFunction": seeder
        | {("secretsmanager:GetSecretValue", master), ("secretsmanager:GetSecretValue", app)},
    }


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_function_is_granted_exactly_the_calls_its_code_makes(
    template: dict[str, Any], scenario: str
) -> None:
    stack = Stack(template, SCENARIOS[scenario])
    expected = expected_grants(stack)
    holders = stack.of_type(FUNCTION) | stack.of_type("AWS::IAM::ManagedPolicy")
    assert set(holders) == set(expected)
    for name, resource in holders.items():
        assert grants(stack.statements(resource)) == expected[name], name


@pytest.mark.parametrize("lease_mode", LEASE_MODES)
def test_the_vpc_endpoints_let_through_every_call_the_functions_make(
    template: dict[str, Any], lease_mode: str
) -> None:
    # The demo stack's: beside an existing database the stack makes no endpoint.
    stack = Stack(template, {"LeaseMode": lease_mode})
    needed = set().union(*expected_grants(stack).values())
    allowed: set[tuple[str, str]] = set()
    for name, resource in stack.of_type("AWS::EC2::VPCEndpoint").items():
        document = stack.resolve(resource["Properties"]["PolicyDocument"])
        allowed |= grants(iter(document["Statement"]))
        assert resource["Properties"]["VpcEndpointType"] in {"Gateway", "Interface"}, name
    assert needed <= allowed, sorted(needed - allowed)
    services = {
        stack.resolve(r["Properties"]["ServiceName"]).rsplit(".", 1)[-1]
        for r in stack.of_type("AWS::EC2::VPCEndpoint").values()
    }
    assert services == {"dynamodb", "s3", "lambda", "secretsmanager"}


def test_the_vpc_has_no_route_to_the_internet(stack: Stack) -> None:
    kinds = {resource["Type"] for resource in stack.resources.values()}
    assert not kinds & {"AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::Route"}
    (vpc,) = stack.of_type("AWS::EC2::VPC").values()
    assert vpc["Properties"]["EnableDnsHostnames"] is True  # private DNS of the endpoints


def test_every_security_group_and_rule_has_a_description(mode_stack: Stack) -> None:
    stack = mode_stack
    for name, group in stack.of_type("AWS::EC2::SecurityGroup").items():
        properties = group["Properties"]
        assert properties["GroupDescription"], name
        rules = properties.get("SecurityGroupIngress", []) + properties.get(
            "SecurityGroupEgress", []
        )
        assert all(rule.get("Description") for rule in rules), name
    for kind in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
        for name, rule in stack.of_type(kind).items():
            assert rule["Properties"].get("Description"), name


def test_nothing_can_reach_the_database_but_the_functions_and_the_rotation_function(
    stack: Stack,
) -> None:
    database = stack.of_type("AWS::EC2::SecurityGroup")["DatabaseSecurityGroup"]
    assert "SecurityGroupIngress" not in database["Properties"]
    ingress = [
        stack.resolve(rule["Properties"])
        for rule in stack.of_type("AWS::EC2::SecurityGroupIngress").values()
    ]
    into: dict[tuple[str, str, int, int], set[str]] = {}
    for rule in ingress:
        key = (rule["GroupId"], rule["IpProtocol"], rule["FromPort"], rule["ToPort"])
        into.setdefault(key, set()).add(rule["SourceSecurityGroupId"])
    functions, rotation = stack._ref("FunctionSecurityGroup"), stack._ref("RotationSecurityGroup")
    assert into == {
        (stack._ref("DatabaseSecurityGroup"), "tcp", 3306, 3306): {functions, rotation},
        # The endpoints admit the functions in their own group's rules, the rotation here.
        (stack._ref("EndpointSecurityGroup"), "tcp", 443, 443): {rotation},
    }
    endpoints = stack.resolve(
        stack.resources["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    )
    assert [rule["SourceSecurityGroupId"] for rule in endpoints] == [functions]


def test_the_rotation_function_reaches_only_the_endpoints_and_mysql(stack: Stack) -> None:
    group = stack.resolve(stack.resources["RotationSecurityGroup"]["Properties"])
    assert "SecurityGroupIngress" not in group
    assert {
        (rule["IpProtocol"], rule["FromPort"], rule["DestinationSecurityGroupId"])
        for rule in group["SecurityGroupEgress"]
    } == {
        ("tcp", 443, stack._ref("EndpointSecurityGroup")),
        ("tcp", 3306, stack._ref("DatabaseSecurityGroup")),
    }
    # Through the endpoint: the calls AWS's rotation function makes, on this secret only.
    (endpoint,) = (
        stack.resolve(e["Properties"])
        for e in stack.of_type("AWS::EC2::VPCEndpoint").values()
        if stack.resolve(e["Properties"]["ServiceName"]).endswith(".secretsmanager")
    )
    allowed = grants(iter(endpoint["PolicyDocument"]["Statement"]))
    secret = stack._ref("AppUserSecret")
    assert {
        (f"secretsmanager:{action}", secret)
        for action in (
            "DescribeSecret",
            "GetSecretValue",
            "PutSecretValue",
            "UpdateSecretVersionStage",
        )
    } | {("secretsmanager:GetRandomPassword", "*")} <= allowed


# ------------------------------------------------------------------ tables


def test_both_tables_are_on_demand_with_point_in_time_recovery(mode_stack: Stack) -> None:
    stack = mode_stack
    tables = stack.of_type("AWS::DynamoDB::Table")
    assert set(tables) == {"LeasesTable", "IdempotencyTable"}
    for name, table in tables.items():
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST", name
        assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]


def test_the_tables_have_the_keys_the_code_uses(stack: Stack) -> None:
    leases = stack.resources["LeasesTable"]["Properties"]
    assert [(k["AttributeName"], k["KeyType"]) for k in leases["KeySchema"]] == list(KEY_SCHEMA)
    assert {a["AttributeType"] for a in leases["AttributeDefinitions"]} == {"S"}
    idempotency = stack.resources["IdempotencyTable"]["Properties"]
    assert idempotency["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idempotency["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    # Powertools' DynamoDBPersistenceLayer writes its expiry to `expiration`.
    assert idempotency["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }


# ------------------------------------------------------------------ observability


def dashboard(stack: Stack) -> dict[str, Any]:
    (resource,) = stack.of_type("AWS::CloudWatch::Dashboard").values()
    body = stack.resolve(resource["Properties"]["DashboardBody"])
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def test_the_dashboard_is_json_and_graphs_every_lease_metric_per_database(
    mode_stack: Stack,
) -> None:
    stack = mode_stack
    widgets = dashboard(stack)["widgets"]
    namespace = stack.parameter("MetricsNamespace")
    # The searches of the lease metrics (the connections graph may search AWS/RDS).
    searches = [
        row[0]["expression"]
        for widget in widgets
        for row in widget["properties"]["metrics"]
        if isinstance(row[0], dict) and f"{{{namespace}," in row[0]["expression"]
    ]
    for metric in Metric:
        assert any(f'MetricName="{metric.value}"' in s for s in searches), metric
    # Per database, or per group of a database (tests/unit/test_template_groups.py).
    schemas = (
        f"{{{namespace},{DIMENSION},service}}",
        f"{{{namespace},{DIMENSION},{GROUP_DIMENSION},service}}",
    )
    for search in searches:
        assert any(schema in search for schema in schemas), search
    (sample_graph,) = (w for w in widgets if "RemainingConnections" in json.dumps(w))
    assert "NoConnectionsLeftError" in json.dumps(sample_graph)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_alarms_watch_refusals_low_remaining_and_reclaims_where_the_metrics_are_written(
    template: dict[str, Any], scenario: str
) -> None:
    stack = Stack(template, SCENARIOS[scenario])
    # The helper writes them, or the demo's test function when it takes leases in-process
    # (beside an existing database, LeaseMode changes nothing: there is no test function).
    direct = scenario == "demo-direct"
    recorder = "TestFunction" if direct else "HelperFunction"
    assert stack.condition("TestFunctionRecordsLeases") is direct
    service = stack.functions()[recorder]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    # The alarms on the lease metrics, per database (tests/unit/test_template_alarms.py
    # holds the others).
    alarms = {
        properties["MetricName"]: properties
        for properties in (
            stack.resolve(alarm["Properties"])
            for alarm in stack.of_type("AWS::CloudWatch::Alarm").values()
        )
        if any(d["Name"] == DIMENSION for d in properties["Dimensions"])
    }
    assert set(alarms) == {
        Metric.NO_CONNECTIONS_LEFT.value,
        Metric.REMAINING_CONNECTIONS.value,
        Metric.LEASES_RECLAIMED.value,
    }
    for properties in alarms.values():
        assert properties["Namespace"] == stack.parameter("MetricsNamespace")
        assert properties["Dimensions"] == [
            {"Name": DIMENSION, "Value": stack.parameter("QuotaDatabase")},
            {"Name": "service", "Value": service},
        ]
        assert properties["TreatMissingData"] == "notBreaching"
    assert alarms[Metric.NO_CONNECTIONS_LEFT.value]["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms[Metric.LEASES_RECLAIMED.value]["Threshold"] == 0
    low = alarms[Metric.REMAINING_CONNECTIONS.value]
    assert (low["Statistic"], low["ComparisonOperator"]) == ("Minimum", "LessThanThreshold")


# ------------------------------------------------------------------ concurrency and retries


@pytest.mark.parametrize(("reserved", "expected"), [("50", 50), ("7", 7), ("-1", None)])
def test_the_helper_reserves_the_concurrency_the_parameter_names(
    template: dict[str, Any], reserved: str, expected: int | None
) -> None:
    parameter = template["Parameters"]["HelperReservedConcurrency"]
    assert parameter["Type"] == "Number"
    assert parameter["Default"] >= 1
    assert parameter["MinValue"] == -1  # -1: none reserved
    # 0 would throttle every call: a rule refuses it.
    (assertion,) = template["Rules"]["HelperConcurrencyIsNotZero"]["Assertions"]
    assert assertion["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "HelperReservedConcurrency"}, "0"]}]
    }
    stack = Stack(template, {"HelperReservedConcurrency": reserved})
    functions = stack.functions()
    helper = functions["HelperFunction"]
    if expected is None:
        assert "ReservedConcurrentExecutions" not in helper
    else:
        assert int(helper["ReservedConcurrentExecutions"]) == expected
    for name, properties in functions.items():
        if name != "HelperFunction":
            assert "ReservedConcurrentExecutions" not in properties, name


@pytest.mark.parametrize("attempts", [None, "2"])
def test_every_function_retries_failed_async_invokes_as_the_parameter_says_none_by_default(
    template: dict[str, Any], attempts: str | None
) -> None:
    parameter = template["Parameters"]["AsyncRetryAttempts"]
    assert (parameter["Type"], parameter["Default"]) == ("Number", 0)
    assert (parameter["MinValue"], parameter["MaxValue"]) == (0, 2)
    stack = Stack(template, {"AsyncRetryAttempts": attempts} if attempts else {})
    for name, properties in stack.functions().items():
        retries = properties["EventInvokeConfig"]["MaximumRetryAttempts"]
        assert int(retries) == int(attempts or 0), name


# ------------------------------------------------------------------ the helper's policy


def test_the_helper_serves_only_the_stacks_database_with_bounded_ttls_and_waits(
    template: dict[str, Any],
) -> None:
    stack = Stack(template, {"QuotaDatabase": "orders-mysql"})
    helper = stack.functions()["HelperFunction"]
    variables = helper["Environment"]["Variables"]
    assert variables["SERVED_DATABASES"] == "orders-mysql"
    assert int(variables["MAX_LEASE_TTL_MS"]) == int(stack.parameter("HelperMaxLeaseTtlMs"))
    assert int(variables["MAX_WAIT_MS"]) == int(stack.parameter("HelperMaxWaitMs"))
    settings = HelperSettings.from_environment(
        {key: str(value) for key, value in variables.items()}
    )
    assert settings.serves("orders-mysql")
    assert not settings.serves("inventory-mysql")
    # By default: 20 minutes of TTL at most, and no wait longer than the helper can run.
    assert settings.max_lease_ttl_ms == 1_200_000
    assert settings.max_wait_ms <= helper["Timeout"] * 1000 - settings.timeout_margin_ms
    assert int(stack.parameter("DefaultLeaseTtlMs")) <= settings.max_lease_ttl_ms


def test_the_outputs_name_what_a_user_needs_after_deploying(template: dict[str, Any]) -> None:
    assert {
        "DatabaseEndpoint",
        "HelperFunctionName",
        "HelperFunctionArn",
        "HarnessFunctionName",
        "LeasesTableName",
        "IdempotencyTableName",
        "DashboardName",
        "DashboardUrl",
        "AppUserSecretArn",
    } <= set(template["Outputs"])
