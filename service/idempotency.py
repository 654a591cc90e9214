"""Release and renew answered once per key, through Powertools idempotency.

Imported on the first release or renew, not at cold start: the idempotency utility is
among the heaviest imports, and an environment that only hands out leases never needs it.

The idempotency table is a convenience, not a dependency: when it cannot be reached, the
action runs without it. A release is safe to repeat on its own (it removes one grant's
entry, if it is there) and a renewal never shortens a lease, so a retry then gets a truthful
answer, if not the first one ("already released" for a release that applied unseen).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from domain import RequestInProgress, StoreUnavailable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb import DynamoDBClient

    from service.settings import HelperSettings

log = logging.getLogger(__name__)

Action = Callable[..., dict[str, Any]]
# A release is keyed on (database, grant token); a renew also on its renewal number. The
# token carries the grant's fence, so a secret used again is a new key. Powertools keeps a
# hash of the key, never the token itself.
KEY = "[database, token, renewal]"


class Once:
    """Wraps an action so that a retried request gets the first answer back."""

    def __init__(
        self,
        settings: HelperSettings,
        client: DynamoDBClient | None,
        persistence: BasePersistenceLayer | None = None,
    ) -> None:
        self._config = IdempotencyConfig(
            event_key_jmespath=KEY,
            expires_after_seconds=settings.idempotency_expiry_s,
            raise_on_no_idempotency_key=True,
        )
        self._persistence = persistence or DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table_name, boto3_client=client
        )

    def wrap(self, action: Action) -> Action:
        decorate = cast(
            "Callable[[Action], Action]",
            idempotent_function(
                data_keyword_argument="request",
                persistence_store=self._persistence,
                config=self._config,
            ),
        )
        once = decorate(action)

        def run(context: LambdaContext, **kwargs: Any) -> dict[str, Any]:
            self._config.register_lambda_context(context)
            try:
                return once(**kwargs)
            except IdempotencyAlreadyInProgressError as error:
                raise RequestInProgress(str(kwargs["request"].action)) from error
            except IdempotencyPersistenceLayerError as error:
                log.warning(
                    "idempotency table unavailable; answering without it",
                    extra={"error": str(idempotency_unavailable(error))},
                )
                return action(**kwargs)

        return run


def idempotency_unavailable(error: IdempotencyPersistenceLayerError) -> StoreUnavailable:
    """Whether the idempotency table's failure may pass is the SDK error's to say
    (Powertools keeps it as the cause); a missing table or a denied role will not."""
    cause = error.__cause__
    if isinstance(cause, StoreUnavailable):
        return StoreUnavailable("idempotency", cause.reason, cause.retryable)
    if isinstance(cause, ClientError | BotoCoreError):
        return unavailable("idempotency", cause)
    return StoreUnavailable("idempotency", str(error), retryable=True)
