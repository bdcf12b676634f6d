"""Wiring: the adapters a service uses, built once per container from the settings.

The local package (`restarter_local`, outside the Lambda code) installs its own set (a scaled clock, the same stores
on the embedded AWS); production code never imports the local runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from restarter.adapters.clock import Clock, SystemClock
from restarter.adapters.ec2_provider import Ec2Provider
from restarter.adapters.events import EventPublisher
from restarter.adapters.provider import Provider
from restarter.adapters.stepfunctions import ExecutionStarter
from restarter.adapters.store import AuditLog, ClusterLock, ClusterStore, RestartStore
from restarter.settings import Settings, get_settings


@dataclass
class Dependencies:
    settings: Settings
    clusters: ClusterStore
    restarts: RestartStore
    locks: ClusterLock
    audit: AuditLog
    provider: Provider
    events: EventPublisher
    executions: ExecutionStarter | None
    clock: Clock


_current: Dependencies | None = None


# EC2 and SSM calls are not retried by the SDK: the state machine's `Retry` owns the backoff,
# so that throttling shows in the execution history and never burns Lambda time in sleeps.
PROVIDER_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
SERVICE_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3})


class LazyClient:
    """A boto3 client made on first use: a cold start pays only for the clients it calls."""

    def __init__(self, session: boto3.session.Session, service: str, config: Config) -> None:
        self._session = session
        self._service = service
        self._config = config
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._session.client(self._service, config=self._config)  # type: ignore[call-overload]
        return getattr(self._client, name)


def build_dependencies(settings: Settings, clock: Clock | None = None) -> Dependencies:
    session = boto3.session.Session(region_name=settings.region)
    dynamodb = LazyClient(session, "dynamodb", SERVICE_CLIENT_CONFIG)
    return Dependencies(
        settings=settings,
        clusters=ClusterStore(dynamodb, settings.clusters_table),
        restarts=RestartStore(dynamodb, settings.restarts_table),
        locks=ClusterLock(dynamodb, settings.locks_table),
        audit=AuditLog(dynamodb, settings.audit_table),
        provider=Ec2Provider(
            LazyClient(session, "ec2", PROVIDER_CLIENT_CONFIG), LazyClient(session, "ssm", PROVIDER_CLIENT_CONFIG)
        ),
        events=EventPublisher(LazyClient(session, "events", SERVICE_CLIENT_CONFIG), settings.event_bus_name),
        executions=(
            ExecutionStarter(LazyClient(session, "stepfunctions", SERVICE_CLIENT_CONFIG), settings.state_machine_arn)
            if settings.state_machine_arn
            else None
        ),
        clock=clock or SystemClock(),
    )


def get_dependencies() -> Dependencies:
    global _current  # noqa: PLW0603 - one set per container, built on first use
    if _current is None:
        _current = build_dependencies(get_settings())
    return _current


def use_dependencies(dependencies: Dependencies | None) -> None:
    """Install a set (the local runtime, tests); None rebuilds from settings on next use."""
    global _current  # noqa: PLW0603
    _current = dependencies
