"""A deployed stack's outputs: where the operator's command line finds the tables, the
quota's database and MySQL without being told each name."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from domain import ConnleaseError

# What the command line needs of infra/template.yaml's outputs, at the least.
REQUIRED_OUTPUTS = ("LeasesTableName",)


class StackNotUsable(ConnleaseError):
    """The stack does not exist, or lacks the outputs the command line reads."""


def stack_outputs(client: Any, stack: str) -> dict[str, str]:
    """The stack's outputs by key; StackNotUsable if it does not exist or lacks any of
    REQUIRED_OUTPUTS (a stack still being created has none yet)."""
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ValidationError":
            raise StackNotUsable(f"stack {stack!r} not found in this account and region") from error
        raise unavailable("describe stack", error) from error
    except BotoCoreError as error:
        raise unavailable("describe stack", error) from error
    outputs = {
        output["OutputKey"]: output["OutputValue"]
        for found in stacks[:1]
        for output in found.get("Outputs", [])
        if "OutputKey" in output and "OutputValue" in output
    }
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        status = stacks[0].get("StackStatus", "unknown") if stacks else "unknown"
        raise StackNotUsable(
            f"stack {stack!r} ({status}) has no output {', '.join(missing)}:"
            " is it a connlease stack (infra/template.yaml), and deployed?"
        )
    return outputs


def quota_database_of(outputs: dict[str, str]) -> str | None:
    """The database the stack's seeder wrote a quota for (its QuotaDatabase output reads
    `name: N leases`)."""
    value = outputs.get("QuotaDatabase")
    return value.partition(":")[0].strip() or None if value else None
