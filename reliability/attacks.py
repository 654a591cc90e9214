"""Attacks on the quota: every way the reviews of issues 14 and 23 found to break it, played
against the real helper (the local Lambda endpoint), DynamoDB (embedded) and MariaDB, whose
application user may hold at most the quota's connections (MAX_USER_CONNECTIONS).

An attack "succeeds" when it does what it tried: takes over, shortens or shares another
holder's lease, gets an answer that is not true of its own grant, reclaims a lease whose
holder's connection is still open, keeps a connection past its lease (also by lifting the
bound its lease puts on its statements, issue 23), or finds another invocation's session
state on a warm connection (also state set through pymysql's own calls); and (issue 23)
gets a made-up secret granted, confirms a guess of a secret offline from what the helper
shows, gets an answer given to a grant of a quota's earlier life, blocks its group's
borrowing with a stripped token, has a token with non-ASCII digits accepted, or sends the
local Lambda endpoint a body it does not answer. Every target is 0 successes, and MariaDB's
own count of the application user's connections never above the quota: where a body can
still lift its bound (several statements in one query), MariaDB refuses the next holder's
connection until the old session ends.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pymysql
from pymysql.constants import ER

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.dynamodb_item import entries_per_shard
from adapters.lambda_invoke import LambdaLeases
from adapters.mysql import (
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    ensure_app_user,
    user_connections,
)
from domain import ConnleaseError, Granted, InvalidInput, KeepWarm, LeaseStore, Quota, Renewed
from domain.groups import Reservation
from domain.model import SKEW_MARGIN_MS
from domain.tokens import lease_key, new_secret
from local.stack import LocalStack, Tables, helper_function
from local.watch import Poller
from reliability.common import Campaign, Figure, Lab, Stopwatch
from service.client import ConnectionLeases

USER_LIMIT_REACHED = 1226  # ER_USER_LIMIT_REACHED: MAX_USER_CONNECTIONS said no
SESSION_STATE = (
    "open transaction",
    "user variable",
    "session variable",
    "temporary table",
    "named lock",
    "table lock",
    "prepared statement",
)


@dataclass(frozen=True)
class Plan:
    rounds: int = 10  # of each attack through the helper
    skew_cases: tuple[tuple[int, int], ...] = (
        # (holder's clock, reclaimer's clock) offsets in ms: one host 2 s off at a time
        (0, SKEW_MARGIN_MS),
        (0, -SKEW_MARGIN_MS),
        (SKEW_MARGIN_MS, 0),
        (-SKEW_MARGIN_MS, 0),
    )
    lease_ms: int = 1_500
    bound_lease_ms: int = 1_000  # the leases of the bodies that try to lift their bound


SHORT = Plan(rounds=2, skew_cases=((0, SKEW_MARGIN_MS), (-SKEW_MARGIN_MS, 0)))


class OffsetClock(SystemClock):
    """A host whose clock is `offset_ms` off."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return super().now_ms() + self.offset_ms


class UserConnections(Poller):
    """MariaDB's own count of the application user's connections, every 10 ms."""

    def __init__(self, admin: MySqlEndpoint, user: str) -> None:
        super().__init__(0.01, "user-connections")
        self._connection = MySqlConnector(admin, None)()
        self._lock = threading.Lock()  # one connection: one request on it at a time
        self._user = user
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, self.now())

    def now(self) -> int:
        with self._lock:
            return user_connections(self._connection, self._user)

    def stopped(self) -> None:
        self._connection.close()


@dataclass
class Arena:
    """What every attack plays against."""

    stack: LocalStack
    store: LeaseStore  # an operator's view, straight to the table
    helper: LambdaLeases
    app: MySqlEndpoint  # the application user
    admin: MySqlEndpoint
    watcher: UserConnections
    shards_of: int | None
    successes: Counter[str]
    tries: Counter[str]

    def quota(self, limit: int, ttl_ms: int = 30_000) -> str:
        database = f"atk-{uuid.uuid4().hex[:8]}"
        self.store.set_quota(database, Quota(limit, ttl_ms))
        return database

    def direct(self, clock: SystemClock) -> DynamoDBLeaseStore:
        """A direct-mode store on a host with this clock, in the lab's layout."""
        return _store(self.stack, clock, self.shards_of)

    def attempt(self, attack: str, succeeded: bool) -> None:
        self.tries[attack] += 1
        self.successes[attack] += int(succeeded)


def _store(stack: LocalStack, clock: SystemClock, shards_of: int | None) -> DynamoDBLeaseStore:
    return DynamoDBLeaseStore(
        stack.dynamodb_client(),
        stack.tables.leases,
        clock,
        shard_capacity=entries_per_shard if shards_of is None else lambda _db: shards_of,
    )


def run(lab: Lab, plan: Plan = Plan()) -> Campaign:
    watch = Stopwatch()
    user = f"atk_{uuid.uuid4().hex[:8]}"
    password = new_secret()
    limit = 1  # every quota that connects holds one lease: the user may hold one connection
    with closing(MySqlConnector(lab.mysql, None)()) as admin:
        ensure_app_user(admin, user, password, lab.mysql.database, limit, require_ssl=False)
    try:
        with arena(lab, replace(lab.mysql, user=user, password=password), limit) as here:
            helper_attacks(here, plan)
            guessable_secrets(here)
            quota_made_again(here)
            stripped_ticket(here)
            non_ascii_tokens(here)
            deep_body(here)
            skewed_clocks(here, plan)
            overrun(here, plan)
            killed_runtimes(here, plan)
            warm_session_state(here)
            warm_driver_state(here)
            lifted_bounds(here, plan)
            lifted_in_one_query = bound_lifted_in_one_query(here, plan)
            refusals = database_refuses_past_the_quota(here, limit)
            peak = here.watcher.peak
    finally:
        with closing(MySqlConnector(lab.mysql, None)()) as admin, admin.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
    figures = [
        Figure.exactly(f"{attack}: successes (of {here.tries[attack]})", count, 0)
        for attack, count in sorted(here.successes.items())
    ]
    figures += [
        Figure.at_most("most connections of the application user (MariaDB's count)", peak, limit),
        Figure.at_least(
            f"connections past MAX_USER_CONNECTIONS = {limit} refused by MariaDB (1226)",
            refusals,
            1,
        ),
        Figure.at_least(
            "the next holder's connects refused by MariaDB (1226) while a bound lifted "
            "inside one multi-statement query ran on",
            lifted_in_one_query,
            1,
        ),
    ]
    return Campaign(
        "Attacks on the quota",
        "Each attack the reviews of issues 14 and 23 found, played against the helper over the "
        "local Lambda endpoint, direct-mode stores and MariaDB, as an application user whose "
        f"MAX_USER_CONNECTIONS is the quota ({limit}). Skewed clocks: one host at a time "
        f"{SKEW_MARGIN_MS / 1000:g} s off.",
        figures,
        seconds=watch.seconds,
    )


@contextmanager
def arena(lab: Lab, app: MySqlEndpoint, limit: int) -> Iterator[Arena]:
    tag = uuid.uuid4().hex[:8]
    stack = LocalStack(
        lambda url, tables: [helper_function(url, tables, concurrency=2)],
        tables=Tables(f"atk-leases-{tag}", f"atk-idempotency-{tag}"),
    )
    with stack:
        store = _store(stack, SystemClock(), lab.shards_of)
        watcher = UserConnections(lab.mysql, app.user)
        with watcher.watching():
            yield Arena(
                stack,
                store,
                LambdaLeases(stack.lambda_client(), "connlease-helper"),
                app,
                lab.mysql,
                watcher,
                lab.shards_of,
                Counter(),
                Counter(),
            )


def _held(here: Arena, database: str, lease_id: str) -> int | None:
    """The expiry of the lease with this id, as the table holds it (None: gone)."""
    found = [lease for lease in here.store.status(database).leases if lease.id == lease_id]
    return found[0].expires_at_ms if found else None


def _refused(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except InvalidInput:
        return None


def helper_attacks(here: Arena, plan: Plan) -> None:
    """Takeover, shortening, sharing and id reuse, all through the helper."""
    for _ in range(plan.rounds):
        database = here.quota(limit=4)
        victim = here.helper.acquire(database, "api/victim", ttl_ms=20_000)
        assert isinstance(victim, Granted)
        expiry = victim.lease.expires_at_ms
        status = here.helper.status(database)
        seen = [lease.id for lease in status.leases] + [lease.holder for lease in status.leases]
        fence = victim.lease.fence
        shard = victim.token.split(".")[2:]  # a split quota's token names its shard
        forged = [f"{new_secret()}.{fence}" + (f".{shard[0]}" if shard else "") for _ in range(3)]
        forged += [f"{(text * 16)[:22]}.{fence}" for text in seen if text]
        for token in [*seen, *forged]:
            _refused(partial(here.helper.release, database, token))
        here.attempt(
            "takeover (release another's lease)", _held(here, database, victim.lease.id) is None
        )
        for token in forged:
            _refused(partial(here.helper.renew, database, token, ttl_ms=100))
        held = _held(here, database, victim.lease.id)
        here.attempt("shortening (renew another's lease)", held is None or held < expiry)
        shared = [
            _refused(partial(here.helper.acquire, database, "api/victim", 20_000, (text * 16)[:22]))
            for text in seen
        ]
        here.attempt(
            "sharing (a grant of another's lease)",
            any(isinstance(g, Granted) and g.lease.id == victim.lease.id for g in shared),
        )
        id_reuse(here, database)


def id_reuse(here: Arena, database: str) -> None:
    """A caller that proposes the same secret again (a request id, an async retry) from a
    new environment: each grant's release and renewal must be true of that grant."""
    secret = new_secret()
    first = LambdaLeases(here.stack.lambda_client(), "connlease-helper")
    granted = first.acquire(database, "batch/1", 20_000, secret)
    assert isinstance(granted, Granted)
    first.renew(database, granted.token, 30_000)
    first.release(database, granted.token)
    again = LambdaLeases(here.stack.lambda_client(), "connlease-helper")  # a new environment
    regranted = again.acquire(database, "batch/1", 20_000, secret)
    assert isinstance(regranted, Granted)
    renewed = again.renew(database, regranted.token, 40_000)
    stored = _held(here, database, regranted.lease.id)
    here.attempt(
        "id reuse: a renewal answered with an expiry the store does not hold",
        not isinstance(renewed, Renewed) or stored != renewed.lease.expires_at_ms,
    )
    released = again.release(database, regranted.token)
    here.attempt(
        "id reuse: a release answered released that left the lease held",
        released.value == "released" and _held(here, database, regranted.lease.id) is not None,
    )


HELPER = "connlease-helper"
# The proposals the helper granted on db40c7a (issue 23): only length and alphabet were checked.
MADE_UP = ("a" * 16, "0" * 16, "1234567890123456", "password_password", "orders-fn-000042")
# A family of guessable secrets (a function's name and a counter): a victim proposes one.
GUESSABLE = tuple(f"orders-fn-{n:06d}" for n in range(1_000))
VICTIM = "orders-fn/victim"
ARABIC_INDIC = str.maketrans(
    "0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
)


def _invoke(here: Arena, event: dict[str, Any]) -> dict[str, Any]:
    """The helper's answer to a raw event, past the client's own checks (an error document,
    or a function error's, for a refusal)."""
    answer = here.stack.lambda_client().invoke(
        FunctionName=HELPER, Payload=json.dumps(event).encode()
    )
    document = json.loads(answer["Payload"].read())
    return document if isinstance(document, dict) else {}


def _derived(database: str, secret: str) -> set[str]:
    """Every form derived from a secret that an attacker knows of: its lease's key, and the
    3-character label db40c7a showed of that key (an unkeyed hash)."""
    key = lease_key(database, secret)
    digest = hashlib.sha256(key.encode()).digest()
    return {key, base64.urlsafe_b64encode(digest).decode()[:3]}


def guessable_secrets(here: Arena) -> None:
    """Issue 23, item 1: made-up proposals granted; a victim's guessable proposal confirmed
    offline against what status showed of its lease; its lease then taken over (the grant
    of its secret, proposed again with the holder status shows, renewed far past its
    expiry) or freed (a release by the secret alone)."""
    database = here.quota(limit=len(MADE_UP))
    for made_up in MADE_UP:
        answer = _invoke(
            here,
            {"action": "acquire", "database": database, "holder": "atk/m", "secret": made_up},
        )
        here.attempt(
            "guessable secrets: a made-up proposal granted by the helper",
            answer.get("outcome") == "granted",
        )
    # The victim proposes one of the family; refused, it draws its own, as the client does.
    database = here.quota(limit=4)
    secret = random.choice(GUESSABLE)
    event = {"action": "acquire", "database": database, "holder": VICTIM, "ttl_ms": 30_000}
    answer = _invoke(here, event | {"secret": secret})
    if answer.get("outcome") != "granted":
        secret = new_secret()
        answer = _invoke(here, event | {"secret": secret})
    victim = answer["lease"]
    # Offline: each candidate against what status shows of every lease (the victim's own
    # secret among them, as if it had been guessed).
    status = _invoke(here, {"action": "status", "database": database})
    shown = {lease["id"].rpartition("-")[2] for lease in status.get("leases", [])}
    confirmed = [guess for guess in (*GUESSABLE, secret) if _derived(database, guess) & shown]
    here.attempt(
        "guessable secrets: a guess confirmed offline from what the helper shows",
        secret in confirmed and len(confirmed) <= 10,
    )
    holders = {lease["holder"] for lease in status.get("leases", [])}
    taken = False
    for guess in dict.fromkeys(confirmed or GUESSABLE[:3]):
        for holder in holders:
            again = _invoke(
                here, {"action": "acquire", "database": database, "holder": holder, "secret": guess}
            )
            if again.get("outcome") == "granted" and again["lease"]["id"] == victim["id"]:
                renew = {"action": "renew", "database": database, "renewal": 1}
                _invoke(here, renew | {"token": again["token"], "ttl_ms": 600_000})
                taken = taken or again["lease"]["fence"] == victim["fence"]
        freed = _invoke(here, {"action": "release", "database": database, "token": guess})
        taken = taken or freed.get("outcome") == "released"
    held = _held(here, database, victim["id"])
    here.attempt(
        "guessable secrets: a victim's lease taken over or freed by its guessed secret",
        taken or held is None or held > victim["expires_at_ms"] + 60_000,
    )


def quota_made_again(here: Arena) -> None:
    """Issue 23, item 2: a quota deleted and made again (or a group forgotten and named
    again) restarted its fences, so one secret proposed in both lives got one token, and the
    helper answered the new grant's release from the old one's idempotency record."""
    cases = {
        "quota": "a quota deleted and made again",
        "quota with a group": "a quota with a group deleted and made again",
        "group forgotten": "a group forgotten and named again",
    }
    for case, name in cases.items():
        database = f"atk-{uuid.uuid4().hex[:8]}"
        groups = [Reservation("api", 2)] if case != "quota" else None
        group = "api" if groups else None
        here.store.set_quota(database, Quota(4, 30_000), groups)
        secret = new_secret()
        first = here.helper.acquire(database, "atk/again", 20_000, secret, group=group)
        assert isinstance(first, Granted), first
        here.helper.release(database, first.token)  # answered, and the answer kept
        if case == "group forgotten":
            here.store.set_quota(database, Quota(4, 30_000), [])  # retired, held nothing
        else:
            here.store.delete_quota(database)
        here.store.set_quota(database, Quota(4, 30_000), groups)
        again = here.helper.acquire(database, "atk/again", 20_000, secret, group=group)
        assert isinstance(again, Granted), again
        released = here.helper.release(database, again.token)
        here.attempt(
            f"{name}: a release answered from its last life's record",
            released.value == "released" and _held(here, database, again.lease.id) is not None,
        )


def stripped_ticket(here: Arena) -> None:
    """Issue 23, item 5: a capped group's borrowed lease renewed by its token without the
    ticket (a plain pool lease's token) lost the lease but kept the ticket, and the group's
    own borrowing was refused until the ticket's TTL."""
    database = f"atk-{uuid.uuid4().hex[:8]}"
    here.store.set_quota(database, Quota(4, 30_000), [Reservation("api", 0, max=1)])
    borrowed = here.helper.acquire(database, "atk/api", 30_000, group="api")
    assert isinstance(borrowed, Granted), borrowed
    assert "~" in borrowed.token, borrowed  # a borrowed lease's: it names its ticket
    here.helper.renew(database, borrowed.token.partition("~")[0], 30_000)
    again = here.helper.acquire(database, "atk/api-again", 30_000, group="api")
    here.attempt(
        "a renewal with its ticket stripped: the group's borrowing refused after it",
        not isinstance(again, Granted),
    )


def non_ascii_tokens(here: Arena) -> None:
    """Issue 23, item 5: the token pattern read any script's digits, so that one grant had
    many tokens (each its own idempotency key)."""
    database = here.quota(limit=2)
    held = here.helper.acquire(database, "atk/ascii", 30_000)
    assert isinstance(held, Granted), held
    secret, _, tail = held.token.partition(".")
    alias = f"{secret}.{tail.translate(ARABIC_INDIC)}"
    renew = {"action": "renew", "database": database, "renewal": 1, "ttl_ms": 60_000}
    answer = _invoke(here, renew | {"token": alias})
    here.attempt(
        "a token with non-ASCII digits accepted by the helper", answer.get("outcome") is not None
    )


def deep_body(here: Arena) -> None:
    """Issue 23, item 5: a body nested 20,000 deep killed the local Lambda endpoint's handler
    thread (RecursionError) instead of being answered 400."""
    assert here.stack.lambdas is not None
    address = here.stack.lambdas.endpoint_url.removeprefix("http://")
    host, _, port = address.partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = b"[" * 20_000 + b"]" * 20_000
        connection.request("POST", f"/2015-03-31/functions/{HELPER}/invocations", body)
        status: int | None = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        status = None  # the connection dropped unanswered
    finally:
        connection.close()
    here.attempt("the local Lambda endpoint: a 20,000-deep body not answered 400", status != 400)


def _hold(leases: ConnectionLeases, app: MySqlEndpoint, ttl_ms: int, statement_s: float) -> float:
    """Hold a connection under a lease of `ttl_ms`, running one statement of `statement_s`
    (past the lease if longer); the monotonic time the statement came back."""
    with leases.connect(MySqlConnector(app, None), ttl_ms=ttl_ms) as connection:
        with suppress(pymysql.err.MySQLError), connection.cursor() as cursor:
            cursor.execute("SELECT SLEEP(%s)", (statement_s,))
        return time.monotonic()


def skewed_clocks(here: Arena, plan: Plan) -> None:
    """A holder and a reclaimer whose clocks disagree by the margin: the reclaimer may take
    the slot only once the holder's connection is gone."""
    for holder_ms, reclaimer_ms in plan.skew_cases:
        database = here.quota(limit=1, ttl_ms=plan.lease_ms)
        holder_clock, reclaimer_clock = OffsetClock(holder_ms), OffsetClock(reclaimer_ms)
        holder = ConnectionLeases(here.direct(holder_clock), database, clock=holder_clock)
        thread = threading.Thread(
            target=_hold, args=(holder, here.app, plan.lease_ms, plan.lease_ms / 1000 + 3)
        )
        thread.start()
        time.sleep(0.2)
        reclaimer = ConnectionLeases(here.direct(reclaimer_clock), database, clock=reclaimer_clock)
        overlapped = _overlaps(reclaimer, here, budget_s=plan.lease_ms / 1000 + 5)
        thread.join()
        here.attempt(
            f"skewed clocks (holder {holder_ms:+d} ms, reclaimer {reclaimer_ms:+d} ms): "
            "a slot reclaimed while its holder's connection was open",
            overlapped,
        )


def _overlaps(leases: ConnectionLeases, here: Arena, budget_s: float) -> bool:
    """Poll for the slot and connect once granted: True if the old holder's connection
    was still on the server then (MariaDB refused the new one: 1226), or no grant came."""
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        try:
            with leases.connect(MySqlConnector(here.app, None), ttl_ms=1_000):
                return False
        except DatabaseError as error:
            if error.code == USER_LIMIT_REACHED:
                return True
            raise
        except ConnleaseError:
            time.sleep(0.02)
    return True


def overrun(here: Arena, plan: Plan) -> None:
    """A body that runs past its lease, in a statement or between statements: its
    connection must be gone from the server shortly after the lease ends (the guard and
    the statement bound), well before anyone may reclaim the slot."""
    for in_statement in (True, False):
        database = here.quota(limit=1, ttl_ms=plan.lease_ms)
        leases = ConnectionLeases(here.direct(SystemClock()), database)
        seen_after: list[int] = []
        # Past the lease, well within the margin: the connection must be gone by then.
        looker = threading.Timer(
            plan.lease_ms / 1000 + 0.5, lambda seen=seen_after: seen.append(here.watcher.now())
        )
        looker.start()
        overrun_s = plan.lease_ms / 1000 + 2
        with leases.connect(MySqlConnector(here.app, None), ttl_ms=plan.lease_ms) as connection:
            with suppress(pymysql.err.MySQLError), connection.cursor() as cursor:
                cursor.execute("SELECT SLEEP(%s)", (overrun_s if in_statement else 0,))
            if not in_statement:
                time.sleep(overrun_s)
        looker.join()
        where = "in a statement" if in_statement else "between statements"
        if not seen_after:
            raise RuntimeError("the look at the server's connections failed; see its thread")
        here.attempt(
            f"a body that overruns its lease {where}: its connection open after the lease",
            seen_after != [0],
        )


def killed_runtimes(here: Arena, plan: Plan) -> None:
    """A runtime killed (SIGKILL) or frozen (SIGSTOP, where no thread of it runs) while it
    holds a connection: the slot is reclaimed only once the server has let the old
    connection go (the server's idle close, set to the lease, ends a frozen one)."""
    for kill in (signal.SIGKILL, signal.SIGSTOP):
        database = here.quota(limit=1, ttl_ms=plan.lease_ms)
        child = _holder_process(here, database, plan.lease_ms)
        try:
            time.sleep(0.3)
            child.send_signal(kill)
            reclaimer = ConnectionLeases(here.direct(SystemClock()), database)
            here.attempt(
                f"a runtime {kill.name}ed with its connection open: "
                "its slot reclaimed while the connection was open",
                _overlaps(reclaimer, here, budget_s=plan.lease_ms / 1000 + 5),
            )
        finally:
            with suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
            child.wait()


def _holder_process(here: Arena, database: str, lease_ms: int) -> subprocess.Popen[bytes]:
    environment = os.environ | {
        "ATK_ENDPOINT": here.stack.dynamodb.endpoint_url,
        "ATK_TABLE": here.stack.tables.leases,
        "ATK_DATABASE": database,
        "ATK_LEASE_MS": str(lease_ms),
        "ATK_HOST": here.app.host,
        "ATK_PORT": str(here.app.port),
        "ATK_USER": here.app.user,
        "ATK_PASSWORD": here.app.password,
        "ATK_SCHEMA": here.app.database,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "reliability.attacks", "--hold"],
        env=environment,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.readline()  # "holding": it has its lease and its connection
    return child


def _hold_in_process() -> None:
    """The killed runtime: take a lease, connect as the application user, and wait."""
    import boto3  # noqa: PLC0415

    client = boto3.client("dynamodb", endpoint_url=os.environ["ATK_ENDPOINT"])
    store = DynamoDBLeaseStore(client, os.environ["ATK_TABLE"], SystemClock())
    app = MySqlEndpoint(
        host=os.environ["ATK_HOST"],
        port=int(os.environ["ATK_PORT"]),
        user=os.environ["ATK_USER"],
        password=os.environ["ATK_PASSWORD"],
        database=os.environ["ATK_SCHEMA"],
    )
    leases = ConnectionLeases(store, os.environ["ATK_DATABASE"])
    with leases.connect(MySqlConnector(app, None), ttl_ms=int(os.environ["ATK_LEASE_MS"])):
        print("holding", flush=True)
        time.sleep(60)


def warm_session_state(here: Arena) -> None:
    """Each kind of session state one invocation may leave on a warm connection: the next
    invocation on that connection must see none of it."""
    database = here.quota(limit=1, ttl_ms=30_000)
    leases = ConnectionLeases(
        here.direct(SystemClock()), database, keep_warm=KeepWarm(hold_ms=60_000, idle_close_s=5)
    )
    connect = MySqlConnector(here.app, None)
    # The application user may not create tables: the campaign's admin does. atk_free is
    # never locked: a table lock left behind shows as atk_free refused (_sees).
    with closing(MySqlConnector(here.admin, None)()) as setup, setup.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS atk_rows (id INT PRIMARY KEY) ENGINE=InnoDB")
        cursor.execute("DELETE FROM atk_rows")
        cursor.execute("CREATE TABLE IF NOT EXISTS atk_free (id INT PRIMARY KEY) ENGINE=InnoDB")
    try:
        for kind in SESSION_STATE:
            with leases.connect(connect, ttl_ms=10_000) as connection:
                thread = _session(connection)
                _leave(connection, kind)
            with leases.connect(connect, ttl_ms=10_000) as connection:
                same = _session(connection) == thread
                here.attempt(
                    f"warm connection: {kind} seen by the next invocation",
                    same and _sees(connection, kind),
                )
    finally:
        leases.close()
        with closing(MySqlConnector(here.admin, None)()) as setup, setup.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS atk_rows, atk_free")


def _session(connection: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def _leave(connection: Any, kind: str) -> None:
    with connection.cursor() as cursor:
        match kind:
            case "open transaction":
                cursor.execute("BEGIN")
                cursor.execute("INSERT INTO atk_rows VALUES (1)")
            case "user variable":
                cursor.execute("SET @atk = 'left behind'")
            case "session variable":
                cursor.execute("SET SESSION sql_mode = 'ANSI'")
            case "temporary table":
                cursor.execute("CREATE TEMPORARY TABLE atk_temp (x INT)")
            case "named lock":
                cursor.execute("SELECT GET_LOCK('atk_lock', 0)")
            case "table lock":
                cursor.execute("LOCK TABLES atk_rows WRITE")
            case "prepared statement":
                cursor.execute("PREPARE atk_stmt FROM 'SELECT 1'")


def _sees(connection: Any, kind: str) -> bool:  # noqa: PLR0911 - one answer per kind
    with connection.cursor() as cursor:
        match kind:
            case "open transaction":
                cursor.execute("SELECT @@in_transaction, (SELECT COUNT(*) FROM atk_rows)")
                in_transaction, rows = cursor.fetchone()
                return bool(in_transaction) or rows > 0
            case "user variable":
                cursor.execute("SELECT @atk")
                return cursor.fetchone()[0] is not None
            case "session variable":
                cursor.execute("SELECT @@session.sql_mode LIKE '%%ANSI_QUOTES%%'")
                return bool(cursor.fetchone()[0])
            case "temporary table":
                try:
                    cursor.execute("SELECT COUNT(*) FROM atk_temp")
                except pymysql.err.MySQLError:
                    return False
                return True
            case "named lock":
                cursor.execute("SELECT IS_USED_LOCK('atk_lock') = CONNECTION_ID()")
                return bool(cursor.fetchone()[0])
            case "table lock":
                try:
                    cursor.execute("SELECT COUNT(*) FROM atk_free")
                except pymysql.err.MySQLError as error:
                    # Still under LOCK TABLES: a table it did not lock is refused. Any other
                    # error is the campaign's own trouble, not a finding.
                    if error.args[0] == ER.TABLE_NOT_LOCKED:
                        return True
                    raise
                return False
            case "prepared statement":
                try:
                    cursor.execute("EXECUTE atk_stmt")
                except pymysql.err.MySQLError:
                    return False
                return True
    return False


def warm_driver_state(here: Arena) -> None:
    """What an invocation sets through pymysql's own calls, on a connection opened as
    pymysql opens one (autocommit off): the next invocation on it must find the connection
    as it was opened, its rollback() undoing what it wrote."""
    database = here.quota(limit=1, ttl_ms=30_000)
    leases = ConnectionLeases(
        here.direct(SystemClock()), database, keep_warm=KeepWarm(hold_ms=60_000, idle_close_s=5)
    )
    connect = partial(_open_as_pymysql_does, here.app)
    with closing(MySqlConnector(here.admin, None)()) as setup, setup.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS atk_driver (id INT PRIMARY KEY) ENGINE=InnoDB")
        cursor.execute("DELETE FROM atk_driver")
    try:
        with leases.connect(connect, ttl_ms=10_000) as connection:
            thread = _session(connection)
            connection.autocommit(True)
        with leases.connect(connect, ttl_ms=10_000) as connection:
            same = _session(connection) == thread
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO atk_driver VALUES (1)")
            connection.rollback()
            with connection.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM atk_driver")
                kept = cursor.fetchone()[0]
            connection.rollback()
        here.attempt(
            "warm connection: autocommit(True) through the driver kept by the next "
            "invocation (its rollback() undid nothing)",
            same and kept > 0,
        )
        with leases.connect(connect, ttl_ms=10_000) as connection:
            thread = _session(connection)
            connection.set_character_set("latin1")
        with leases.connect(connect, ttl_ms=10_000) as connection:
            same = _session(connection) == thread
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@character_set_client, @@character_set_results")
                server_side = set(cursor.fetchone())
            latin1 = server_side != {"utf8mb4"} or connection.charset != "utf8mb4"
        here.attempt(
            "warm connection: set_character_set('latin1') through the driver seen by the "
            "next invocation",
            same and latin1,
        )
    finally:
        leases.close()
        with closing(MySqlConnector(here.admin, None)()) as setup, setup.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS atk_driver")


def _open_as_pymysql_does(app: MySqlEndpoint, **options: Any) -> Any:
    """A connection with pymysql's own defaults (autocommit off, utf8mb4), as the app user."""
    return pymysql.connect(
        host=app.host,
        port=app.port,
        user=app.user,
        password=app.password,
        database=app.database,
        **options,
    )


# Bodies that try to lift the bound their lease puts on their statements, then run a
# statement past the lease. Each gets the connection and how long to sleep.
def _set_statement(connection: Any, sleep_s: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP({sleep_s})")


def _set_session_then_statement(connection: Any, sleep_s: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION max_statement_time = 0")
        cursor.execute(f"SELECT SLEEP({sleep_s})")  # at once: well within 100 ms


def _set_session_out_of_sight_then_statement(connection: Any, sleep_s: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute("EXECUTE IMMEDIATE CONCAT('SET SESSION max_', 'statement_time = 0')")
        cursor.execute(f"SELECT SLEEP({sleep_s})")


def _reconnect_then_statement(connection: Any, sleep_s: float) -> None:
    connection.close()
    for pause_s in (0.02, 0.05, 0.1, None):  # the old session's slot may take a moment to go
        try:
            connection.connect()
            break
        except pymysql.err.OperationalError as error:
            if error.args[0] != USER_LIMIT_REACHED or pause_s is None:
                raise
            time.sleep(pause_s)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT SLEEP({sleep_s})")


LIFTS = {
    "SET STATEMENT max_statement_time=0 FOR a statement": _set_statement,
    "SET SESSION max_statement_time=0, then a statement at once": _set_session_then_statement,
    "the bound lifted out of sight (EXECUTE IMMEDIATE), then a statement": (
        _set_session_out_of_sight_then_statement
    ),
    "close() and connect() again, then a statement": _reconnect_then_statement,
}


def lifted_bounds(here: Arena, plan: Plan) -> None:
    """A body that lifts its statement bound and then runs a statement past its lease: its
    connection must be gone from the server shortly after the lease ends, as an overrun's
    is (issue 23's finding: the lease went back while the session lived on)."""
    for lift_name, lift in LIFTS.items():
        database = here.quota(limit=1, ttl_ms=plan.bound_lease_ms)
        leases = ConnectionLeases(here.direct(SystemClock()), database)
        seen_after: list[int] = []
        looker = threading.Timer(
            plan.bound_lease_ms / 1000 + 0.5,
            lambda seen=seen_after: seen.append(here.watcher.now()),
        )
        looker.start()
        connect = MySqlConnector(here.app, None)
        with (
            leases.connect(connect, ttl_ms=plan.bound_lease_ms) as connection,
            suppress(pymysql.err.MySQLError),
        ):
            lift(connection, plan.bound_lease_ms / 1000 + 2)
        looker.join()
        if not seen_after:
            raise RuntimeError("the look at the server's connections failed; see its thread")
        here.attempt(f"{lift_name}: its connection open after the lease", seen_after != [0])
        _wait_for_no_connection(here, budget_s=4)


def _wait_for_no_connection(here: Arena, budget_s: float) -> None:
    """Until the application user has no connection (a lifted statement sleeps on), so that
    the next attack starts with its slot free."""
    deadline = time.monotonic() + budget_s
    while here.watcher.now() and time.monotonic() < deadline:
        time.sleep(0.05)


def bound_lifted_in_one_query(here: Arena, plan: Plan) -> int:
    """Where the body can still lift its bound: several statements in one query (a
    connection opened with MULTI_STATEMENTS), the first lifting it out of sight, the second
    running past the lease. The lease goes back at its end and the next holder gets it;
    MariaDB's MAX_USER_CONNECTIONS refuses that holder's connection until the old session
    ends. Returns how many of its connects were refused; the attack succeeds if it
    connected while the old session was still on the server."""
    database = here.quota(limit=1, ttl_ms=plan.bound_lease_ms)
    leases = ConnectionLeases(here.direct(SystemClock()), database)
    connect = partial(
        _open_as_pymysql_does,
        here.app,
        autocommit=True,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )
    sleep_s = plan.bound_lease_ms / 1000 + 1
    with leases.connect(connect, ttl_ms=plan.bound_lease_ms) as connection:
        old = _session(connection)
        with suppress(pymysql.err.MySQLError), connection.cursor() as cursor:
            cursor.execute(
                "EXECUTE IMMEDIATE CONCAT('SET SESSION max_', 'statement_time = 0');"
                f" SELECT SLEEP({sleep_s})"
            )
    refused, overlapped = 0, False
    successor = ConnectionLeases(here.direct(SystemClock()), database)
    deadline = time.monotonic() + sleep_s + 3
    while time.monotonic() < deadline:
        try:
            with successor.connect(MySqlConnector(here.app, None), ttl_ms=5_000) as connection:
                with closing(MySqlConnector(here.admin, None)()) as admin, admin.cursor() as cursor:
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s",
                        (old,),
                    )
                    overlapped = cursor.fetchone()[0] > 0
                break
        except DatabaseError as error:
            if error.code != USER_LIMIT_REACHED:
                raise
            refused += 1
            time.sleep(0.1)
    here.attempt(
        "a bound lifted inside one multi-statement query: the next holder connected while "
        "the old session ran on",
        overlapped,
    )
    return refused


def database_refuses_past_the_quota(here: Arena, limit: int) -> int:
    """Connections opened as the application user past any lease (a rogue or buggy
    caller): MariaDB itself refuses those past MAX_USER_CONNECTIONS."""
    opened, refused = [], 0
    try:
        for _ in range(limit + 2):
            try:
                opened.append(MySqlConnector(here.app, None)())
            except DatabaseError as error:
                refused += error.code == USER_LIMIT_REACHED
    finally:
        for connection in opened:
            connection.close()
    return refused


if __name__ == "__main__" and sys.argv[1:] == ["--hold"]:
    _hold_in_process()
