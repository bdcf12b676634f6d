"""The Powertools singletons every function shares (one place, created once per container)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="restarter")
metrics = Metrics(namespace="Restarter", service="restarter")
