"""Proposed secrets (docs/design.md, "A proposal must be drawn at random"): what random
draws score under `domain.entropy`, how long the helper's check takes, and what the doc's
examples score. No store, no MySQL: `domain.tokens.check_secret` and
`domain.entropy.estimated_bits` alone, as the helper calls them.

`python -m benchmarks.secret_entropy` prints a short run.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import secrets
import string
import time
import timeit
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from domain import InvalidInput
from domain.entropy import MIN_PROPOSAL_BITS, estimated_bits
from domain.tokens import check_secret, new_secret

# F7's example (issue 23): a holder as the client writes it, and the time in milliseconds.
HOLDER = "invoice-sync/8f14e45f"
DATABASE = "orders-mysql"

# What callers draw: the client's own secret and what secrets and uuid offer (a UUID has
# 122 random bits, the rest 128), taken in turn.
DRAWS: tuple[Callable[[], str], ...] = (
    new_secret,
    lambda: secrets.token_urlsafe(16),
    lambda: secrets.token_hex(16),
    lambda: str(uuid.uuid4()),
)
# What status may show before a secret (holder, database, group), taken in turn, with the
# helper's clock or none: the bound on refusing a random secret holds for every context.
CONTEXTS: tuple[tuple[tuple[str, ...], bool], ...] = (
    ((), False),
    ((HOLDER, DATABASE), True),
    ((HOLDER, DATABASE, "api"), True),
    (("x" * 32, "reporting-mysql"), False),
)

# The check's cost grows with the ways the model can make a string: a run of digits is at
# once a number, a time, a sequence and copies, so digits are its slowest 64 characters.
SLOW_64: dict[str, Callable[[], str]] = {
    "random base64url": lambda: secrets.token_urlsafe(48),
    "random hex": lambda: secrets.token_hex(32),
    "random digits": lambda: "".join(secrets.choice(string.digits) for _ in range(64)),
    "counting digits": lambda: ("0123456789" * 7)[:64],
    "one digit": lambda: "0" * 64,
    "one letter": lambda: "a" * 64,
}

_BASE64URL = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class Plan:
    draws: int  # random secrets scored
    hex88_draws: int  # token_hex(11) proposals checked
    timing_rounds: int  # the fastest round is kept: the others met a busy machine


FULL = Plan(draws=50_000, hex88_draws=10_000, timing_rounds=7)
QUICK = Plan(draws=4_000, hex88_draws=2_000, timing_rounds=3)


@dataclass(frozen=True)
class SecretsRun:
    draws: int
    lowest_bits: float  # the lowest score of any random draw, in any context
    check_ms_22: float  # one check of a new_secret (22 characters)
    check_ms_64: float  # one check of the slowest kind of 64 characters
    slowest_64: str
    hex88_refused: int
    hex88_draws: int
    invoice_sync_given_bits: float  # invoice-sync-<epoch ms> after what status shows
    invoice_sync_alone_bits: float  # the same string, nothing shown before it
    computed_bits: dict[str, float]  # strings computed from what is public

    def figures(self) -> dict[str, str]:
        """The figures docs/design.md quotes (floors: "none under" stays true)."""
        return {
            "secrets.draws": f"{self.draws:,}",
            "secrets.lowest_bits": f"{math.floor(self.lowest_bits)}",
            "secrets.check_ms_22": f"{self.check_ms_22:.1f} ms",
            "secrets.check_ms_64": f"{self.check_ms_64:.1f} ms",
            "secrets.hex88_refused": f"{self.hex88_refused:,} in {self.hex88_draws:,}",
            "secrets.invoice_sync_given_bits": f"{self.invoice_sync_given_bits:.0f}",
            "secrets.invoice_sync_alone_bits": f"{self.invoice_sync_alone_bits:.0f}",
            "secrets.computed_lowest_bits": f"{math.floor(min(self.computed_bits.values()))}",
        }

    def lines(self) -> list[str]:
        computed = ", ".join(f"{name} {bits:.0f}" for name, bits in self.computed_bits.items())
        return [
            "## Proposed secrets",
            "",
            f"`domain.entropy`'s estimate, which refuses a proposal under {MIN_PROPOSAL_BITS} "
            'bits (docs/design.md, "Who may do what"), of what callers draw and of the '
            "doc's examples (`benchmarks/secret_entropy.py`):",
            "",
            f"- {self.draws:,} random secrets (`new_secret`, `token_urlsafe(16)`, "
            "`token_hex(16)`, `uuid4`, in turn; no context, and a holder, database and group "
            f"with the clock): the lowest scored {self.lowest_bits:.1f} bits.",
            f"- `token_hex(11)` (88 random bits, under the bar): {self.hex88_refused:,} of "
            f"{self.hex88_draws:,} refused.",
            f"- `invoice-sync-<epoch ms>` for holder `{HOLDER}`, at that time: "
            f"{self.invoice_sync_given_bits:.1f} bits after what status shows, "
            f"{self.invoice_sync_alone_bits:.1f} alone.",
            f"- Computed from what status shows, so as guessable as the holder: {computed} bits.",
            f"- One check (`check_secret` with a holder, a database and the clock): "
            f"{self.check_ms_22:.2f} ms for a `new_secret` (22 characters), "
            f"{self.check_ms_64:.2f} ms for the slowest 64 ({self.slowest_64}); the fastest "
            "of a few rounds.",
            "",
        ]


def lowest_score(draws: int) -> float:
    now_ms = time.time_ns() // 1_000_000
    lowest = math.inf
    for n in range(draws):
        secret = DRAWS[n % len(DRAWS)]()
        given, clocked = CONTEXTS[n // len(DRAWS) % len(CONTEXTS)]
        lowest = min(lowest, estimated_bits(secret, given, now_ms if clocked else None))
    return lowest


def refused(draw: Callable[[], str], draws: int) -> int:
    now_ms = time.time_ns() // 1_000_000
    count = 0
    for _ in range(draws):
        try:
            check_secret(draw(), holder=HOLDER, database=DATABASE, now_ms=now_ms)
        except InvalidInput:
            count += 1
    return count


def check_ms(secret: str, rounds: int) -> float:
    """One check as the helper makes it; a made-up string's refusal is part of its cost."""
    now_ms = time.time_ns() // 1_000_000

    def check() -> None:
        with contextlib.suppress(InvalidInput):
            check_secret(secret, holder=HOLDER, database=DATABASE, now_ms=now_ms)

    timer = timeit.Timer(check)
    number = max(1, timer.autorange()[0])
    return min(timer.repeat(repeat=rounds, number=number)) / number * 1000


def computed_from_public(now_ms: int) -> dict[str, str]:
    """What looks random but is one guess away for whoever reads status."""
    holder = HOLDER.encode()
    return {
        "`sha256(holder)`": hashlib.sha256(holder).hexdigest(),
        "`md5(holder)`": hashlib.md5(holder, usedforsecurity=False).hexdigest(),
        "`uuid5(ns, holder)`": str(uuid.uuid5(uuid.NAMESPACE_URL, HOLDER)),
        # A seed near the grant time: the attacker tries each second of it.
        "`Random(epoch s).choices`": "".join(
            random.Random(now_ms // 1000).choices(_BASE64URL, k=22)
        ),
    }


def run(plan: Plan = QUICK) -> SecretsRun:
    now_ms = time.time_ns() // 1_000_000
    invoice = f"invoice-sync-{now_ms}"
    timings = {kind: check_ms(make(), plan.timing_rounds) for kind, make in SLOW_64.items()}
    slowest = max(timings, key=timings.__getitem__)
    return SecretsRun(
        draws=plan.draws,
        lowest_bits=lowest_score(plan.draws),
        check_ms_22=check_ms(new_secret(), plan.timing_rounds),
        check_ms_64=timings[slowest],
        slowest_64=slowest,
        hex88_refused=refused(lambda: secrets.token_hex(11), plan.hex88_draws),
        hex88_draws=plan.hex88_draws,
        invoice_sync_given_bits=estimated_bits(invoice, (HOLDER, DATABASE), now_ms),
        invoice_sync_alone_bits=estimated_bits(invoice, (), now_ms),
        computed_bits={
            name: estimated_bits(secret, (HOLDER, DATABASE), now_ms)
            for name, secret in computed_from_public(now_ms).items()
        },
    )


if __name__ == "__main__":
    print("\n".join(run().lines()))
