"""Where the command line acts: `--local` signs with the local stack's keys, not with
whatever credentials the operator's shell has configured."""

from __future__ import annotations

import pytest

from adapters.aws import AwsSetupError
from cli.app import LOCAL_ENDPOINT_URL, Where


def test_local_signs_with_the_local_stacks_keys_whatever_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALOPERATORKEY0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-local-stack")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    console = Where(local=True).console()

    client = console.aws.client("dynamodb")
    assert client.meta.endpoint_url == LOCAL_ENDPOINT_URL
    assert client._request_signer._credentials.access_key == "local"


def test_a_named_profile_wins_over_the_local_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    with pytest.raises(AwsSetupError, match="no-such-profile"):
        Where(local=True, profile="no-such-profile").console()
