"""Campaign 4, database faults, in short; and the fault proxy it runs through, on its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymysql
import pymysql.cursors
import pytest

from adapters.mysql import MySqlEndpoint
from local.demo_setup import mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from local.mysql_faults import Fault, FaultRates, MySqlFaults, server_id
from reliability import db_faults
from reliability.common import lab

pytestmark = pytest.mark.integration


@pytest.fixture
def mysql() -> MySqlEndpoint:
    return mysql_from_environment()


def proxy_with(mysql: MySqlEndpoint, fault: Fault | None) -> MySqlFaults:
    return MySqlFaults(mysql, FaultRates(**({fault.value: 1.0} if fault else {})))


def connect(endpoint: MySqlEndpoint) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        database=endpoint.database,
        connect_timeout=5,
        read_timeout=5,
    )


@pytest.fixture
def passthrough(mysql: MySqlEndpoint) -> Iterator[MySqlFaults]:
    with proxy_with(mysql, None) as proxy:
        yield proxy


def test_a_connection_without_a_fault_passes_through(passthrough: MySqlFaults) -> None:
    connection = connect(passthrough.endpoint)
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(0.05), CONNECTION_ID()")
        assert cursor.fetchall() == ((0, server_id(connection)),)
    connection.close()

    assert passthrough.injected.total() == passthrough.missed.total() == 0
    assert passthrough.connections == 1


@pytest.mark.parametrize("fault", [Fault.REFUSED, Fault.RESET])
def test_a_refused_connection_fails_the_clients_connect(mysql: MySqlEndpoint, fault: Fault) -> None:
    with proxy_with(mysql, fault) as proxy:
        with pytest.raises(pymysql.err.OperationalError):
            connect(proxy.endpoint)

        assert proxy.injected == {fault: 1}
        assert proxy.server_ids() == frozenset()  # MariaDB never saw it


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.KILLED])
def test_a_struck_connection_fails_mid_query(mysql: MySqlEndpoint, fault: Fault) -> None:
    with proxy_with(mysql, fault) as proxy:
        connection = connect(proxy.endpoint)  # SET NAMES, quick, is let through
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError), connection.cursor() as cursor:
            cursor.execute("SELECT SLEEP(1)")

        assert time.monotonic() - started < 0.5
        assert proxy.injected == {fault: 1}
        assert proxy.fault_of(server_id(connection)) is fault


def test_a_cut_spares_a_connection_whose_queries_all_answer_in_time(mysql: MySqlEndpoint) -> None:
    with proxy_with(mysql, Fault.CUT) as proxy:
        connection = connect(proxy.endpoint)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchall() == ((1,),)
        connection.close()
        time.sleep(0.05)  # the proxy's session ends after the client's

        assert proxy.injected.total() == 0
        assert proxy.missed == {Fault.CUT: 1}


def test_campaign_every_lease_comes_back_whatever_mysql_does(
    embedded_dynamodb: EmbeddedDynamoDB, mysql: MySqlEndpoint
) -> None:
    with lab(mysql, dynamodb=embedded_dynamodb) as the_lab:
        campaign = db_faults.run(the_lab, **db_faults.SHORT)

    assert not campaign.failed, campaign.failed
    for fault in Fault:
        assert int(campaign.figure(f"faults injected: {fault}").value) >= 1
    for outcome in (db_faults.Outcome.REFUSED, db_faults.Outcome.CUT, db_faults.Outcome.KILLED):
        assert int(campaign.figure(f"outcome: {outcome}").value) >= 1
    sample = campaign.table[-1]
    assert sample["strategy"] == "sample counter"
    assert sample["left outstanding after the run"] == 0
