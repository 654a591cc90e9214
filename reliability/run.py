"""`make reliability`: every campaign in full (`--short`: the versions `make test` runs),
figures printed and written to docs/reliability.md; exits 1 if a target is missed."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

__version__ = version("connlease")
from adapters.mysql import DatabaseError, MySqlConnector
from local import figures
from local.demo_setup import mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from local.faults import FaultRates
from reliability import (
    attacks,
    bad_input,
    crashes,
    db_faults,
    duplicates,
    interleavings,
    store_faults,
)
from reliability.common import Campaign, Figure, Lab, lab

Runner = Callable[[Lab], Campaign]


def runners(short: bool, store_rates: FaultRates) -> list[Runner]:
    store_plan = replace(store_faults.SHORT if short else store_faults.Plan(), rates=store_rates)
    if short:
        return [
            lambda lab: crashes.run(lab, crashes.SHORT),
            lambda lab: crashes.run(lab, crashes.GROUPS_SHORT),
            lambda lab: duplicates.run(lab, duplicates.SHORT),
            lambda lab: duplicates.run(lab, duplicates.GROUPS_SHORT),
            lambda lab: store_faults.run(lab, store_plan),
            lambda lab: db_faults.run(lab, **db_faults.SHORT),
            lambda lab: bad_input.run(lab, **bad_input.SHORT),
            lambda lab: attacks.run(lab, attacks.SHORT),
        ]
    return [
        crashes.run,
        lambda lab: crashes.run(lab, crashes.GROUPS),
        duplicates.run,
        lambda lab: duplicates.run(lab, duplicates.GROUPS),
        lambda lab: store_faults.run(lab, store_plan),
        db_faults.run,
        bad_input.run,
        attacks.run,
    ]


def fault_rates(text: str) -> FaultRates:
    """`throttle=0.05,server_error=0.05,timeout=0.02,drop_after_apply=0.05`"""
    try:
        pairs = (part.split("=") for part in text.split(","))
        return FaultRates(**{name.strip(): float(value) for name, value in pairs})
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def _value(value: float | int | str) -> str:
    if isinstance(value, float):
        return "never" if value == float("inf") else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def _met(figure: Figure) -> str:
    return {None: "", True: "met", False: "**missed**"}[figure.met]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_value(row[name]) for name in header) + " |" for row in rows]
    return lines


def render(campaigns: list[Campaign], command: str, seconds: float) -> str:
    lines = [
        "# Reliability campaigns",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} in {seconds:,.0f} s "
        f"(connlease {__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores). Each campaign runs against the real local parts: the "
        "embedded DynamoDB (moto's server on loopback, requests serialized) and MariaDB. "
        "Seeded: a rerun injects the same faults in the same order, though thread timing "
        "differs. `make test` runs a short version of each, held to the same targets.",
        "",
        "| campaign | targets | seconds |",
        "|---|---|---|",
    ]
    for campaign in campaigns:
        held = [figure for figure in campaign.figures if figure.met is not None]
        verdict = f"{len(held) - len(campaign.failed)} of {len(held)} met"
        lines.append(f"| {campaign.title} | {verdict} | {campaign.seconds:,.0f} |")
    for campaign in campaigns:
        lines += ["", f"## {campaign.title}", "", campaign.what, ""]
        lines += ["| figure | value | target | |", "|---|---|---|---|"]
        lines += [
            f"| {figure.name.strip()} | {_value(figure.value)} | {figure.target} | {_met(figure)} |"
            for figure in campaign.figures
        ]
        if campaign.table:
            lines += ["", *_table(campaign.table)]
    return "\n".join(lines) + "\n"


def print_campaign(campaign: Campaign) -> None:
    print(f"\n{campaign.title} ({campaign.seconds:.0f} s)")
    for figure in campaign.figures:
        mark = {None: "", True: "ok", False: "MISSED"}[figure.met]
        print(f"  {figure.name:<78} {_value(figure.value):>10} {figure.target:>8} {mark}")


def headline(campaigns: list[Campaign]) -> dict[str, str]:
    """The figures README and docs quote, by name (local.figures puts them there)."""
    held = [f for c in campaigns for f in c.figures if f.met is not None]
    return {
        "reliability.campaigns": str(len(campaigns)),
        "reliability.targets": str(len(held)),
        "reliability.targets_met": str(sum(1 for f in held if f.met)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short versions")
    parser.add_argument("--output", type=Path, default=Path("docs/reliability.md"))
    parser.add_argument(
        "--store-fault-rates",
        type=fault_rates,
        default=store_faults.DEFAULT_RATES,
        metavar="NAME=SHARE,...",
        help="shares of DynamoDB requests that meet each fault: throttle, server_error, "
        "timeout, drop_after_apply (default: %(default)s)",
    )
    parser.add_argument(
        "--layout",
        choices=["single", "split", "both"],
        default="both",
        help="quotas in one item, split over shards (with the capacity model's throttling), "
        "or each campaign in both (default)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    started = time.monotonic()
    mysql = mysql_from_environment()
    try:
        MySqlConnector(mysql, None)().close()
    except DatabaseError as error:
        print(
            f"MySQL at {mysql.describe()} is unreachable ({error}). The campaigns need one: "
            "point them at it with DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_NAME.",
            file=sys.stderr,
        )
        return 2
    campaigns = []
    with EmbeddedDynamoDB() as embedded:
        checked = interleavings.campaign(embedded.client(), short=args.short)
    print_campaign(checked)
    campaigns.append(checked)
    for split in {"single": [False], "split": [True], "both": [False, True]}[args.layout]:
        with lab(mysql, split=split) as here:
            for runner in runners(args.short, args.store_fault_rates):
                campaign = runner(here)
                campaign.title += f" ({here.layout})"
                print_campaign(campaign)
                campaigns.append(campaign)
    command = "make reliability" + (f" ARGS='{' '.join(argv)}'" if argv else "")
    args.output.write_text(render(campaigns, command, time.monotonic() - started))
    print(f"\nwrote {args.output}")
    if not argv:  # the full run in both layouts is the one the docs quote
        figures.record("reliability", command, headline(campaigns))
        figures.fill_docs()
    missed = [f"{c.title}: {f.name.strip()}" for c in campaigns for f in c.failed]
    for miss in missed:
        print(f"target missed: {miss}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
