"""`connlease release`: an operator's force-release of a stuck lease, without its token.

It is an operator's act, and is seen as one: a WARNING log line (who, what, whose) on
stderr, and the LeasesForceReleased metric (dimensions service=connlease-cli, database)
that the dashboard graphs beside the reclaimed leases."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Annotated

import typer
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from cli.app import (
    BAD_USAGE,
    CliError,
    Where,
    acting,
    answering,
    app,
    confirm,
    err,
    out,
)
from cli.render import lease_doc, leases_table
from domain import ConnleaseError, InvalidInput
from domain.ports import Metric
from service.bootstrap import CONSOLE_SERVICE, Console


class _Stderr(logging.Handler):
    """Lines to whatever sys.stderr is when one is written (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


logger = Logger(service=CONSOLE_SERVICE, logger_handler=_Stderr())


@app.command()
@answering
@acting
def release(
    database: Annotated[str, typer.Argument(help="The quota's database.")],
    holder: Annotated[str | None, typer.Option(help="Release every lease of this holder.")] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            help="Release the lease with this label (connlease leases: its fence, .shard and"
            " ~group, e.g. 17.3), or the helper's label without the shard when it names one."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    *,
    where: Where,
) -> None:
    """Force-release a holder's leases, or one lease, without their token; logged and
    counted (LeasesForceReleased). Its holder's next renewal finds the lease lost."""
    if (holder is None) == (lease is None):
        raise CliError("give --holder or --lease, one of the two", BAD_USAGE)
    console = where.console()
    status = console.store.status(database)
    try:
        chosen = status.named(holder=holder, lease=lease)
    except InvalidInput as error:  # the flag typed, not the field
        raise CliError(f"--{error.field}: {error.message}", BAD_USAGE) from error
    if not chosen:
        what = f"no lease of holder {holder!r}" if holder is not None else f"no lease {lease!r}"
        raise CliError(f"{what} in quota {database!r} (connlease leases lists them)")
    out.print(leases_table(replace(status, leases=chosen), console.clock.now_ms()))
    if not yes:
        confirm(f"Force-release {len(chosen)} lease(s)?", "not released")
    operator = _operator(console)
    removed = 0
    try:
        # Only the leases shown and confirmed, one at a time: each is logged as soon as it
        # is gone, so a failure part way leaves no release unrecorded.
        for found in chosen:
            if console.store.force_release(database, [found]):
                removed += 1
                logger.warning(
                    "operator force-release",
                    extra={
                        "database": database,
                        "operator": operator,
                        **lease_doc(found, console.clock.now_ms()),
                    },
                )
    finally:
        if removed:
            _count(console, database, removed)
    if not removed:
        raise CliError("released nothing: the lease ended or was released meanwhile")
    out.print(f"released {removed} lease(s) of {database}")


def _count(console: Console, database: str, removed: int) -> None:
    try:
        console.metrics.record(Metric.LEASES_FORCE_RELEASED, removed, database)
    except ConnleaseError as error:
        err.print(f"connlease: warning: the metric was not written: {error}")


def _operator(console: Console) -> str:
    """Who acts, for the log line: the caller's ARN, as CloudTrail names it."""
    try:
        return str(console.aws.client("sts").get_caller_identity()["Arn"])
    except (ClientError, BotoCoreError, ConnleaseError, KeyError):
        return "unknown"
