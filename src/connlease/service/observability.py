"""One function's Powertools objects, named and namespaced from its environment.

Powertools objects are made at import, because its decorators wrap the handler there;
their service name and metrics namespace come from the validated settings rather than
from Powertools reading the environment on its own (a missing namespace would otherwise
only fail when the first metrics are flushed).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_lambda_powertools import Logger, Metrics, Tracer

from connlease.service.settings import ObservabilitySettings


@dataclass(frozen=True)
class Powertools:
    logger: Logger
    tracer: Tracer
    metrics: Metrics


def powertools() -> Powertools:
    settings = ObservabilitySettings.from_environment()
    service = settings.powertools_service_name
    return Powertools(
        logger=Logger(service=service),
        tracer=Tracer(service=service),
        metrics=Metrics(namespace=settings.powertools_metrics_namespace, service=service),
    )
