"""One function's Powertools objects, named and namespaced from its environment.

Powertools objects are made at import, because its decorators wrap the handler there;
their service name and metrics namespace come from the validated settings rather than
from Powertools reading the environment on its own (a missing namespace would otherwise
only fail when the first metrics are flushed).

In Lambda (tracing on), the Tracer patches libraries for X-Ray at import. By default that is
every library the X-Ray SDK supports that is installed, each imported to be patched; a
function whose only outside calls go through the AWS SDK names `("botocore",)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Metrics, Tracer

from service.settings import ObservabilitySettings


@dataclass(frozen=True)
class Powertools:
    logger: Logger
    tracer: Tracer
    metrics: Metrics


def powertools(patch_modules: Sequence[str] | None = None) -> Powertools:
    """`patch_modules`: what the Tracer patches for X-Ray; None, all the SDK supports."""
    settings = ObservabilitySettings.from_environment()
    service = settings.powertools_service_name
    return Powertools(
        logger=Logger(service=service),
        tracer=Tracer(service=service, patch_modules=patch_modules),
        metrics=Metrics(namespace=settings.powertools_metrics_namespace, service=service),
    )
