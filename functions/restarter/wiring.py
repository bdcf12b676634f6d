"""Wiring: the one place the adapters are built, once per container, from the settings.

Every function uses the shared set (`Dependencies`); a function that needs more gets a set built
around it: rollouts, alarm recovery, the queue, schedules, and the authorizer's key store (which
needs nothing else). Each set is built on its first use and kept for the container; its clients
are made on their first call (`adapters.clients`), so a cold start pays only for what it calls.

The local package (`restarter_local`, outside the Lambda code) and tests install their own sets
(`use_*`: a scaled clock, the same stores on the embedded AWS); a set built around the shared
one is built again once the shared one is replaced. Production code never imports the local
runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from restarter.domain.errors import RestarterError
from restarter.settings import get_settings

# The adapters are imported by the builders that use them: a function's cold start imports
# only the adapters (and their domain models) of the sets it builds.
if TYPE_CHECKING:
    from restarter.adapters.account_probe import AccountProbe
    from restarter.adapters.alarms import AlarmTags
    from restarter.adapters.api_keys import ApiKeyStore
    from restarter.adapters.breaker_store import BreakerStore
    from restarter.adapters.clients import AwsClients
    from restarter.adapters.clock import Clock
    from restarter.adapters.events import EventPublisher
    from restarter.adapters.health_store import HealthReportStore
    from restarter.adapters.idempotency import IdempotencyTable
    from restarter.adapters.provider import Provider
    from restarter.adapters.queues import MessageVisibility
    from restarter.adapters.recovery_store import RecoveryStore
    from restarter.adapters.rollout_store import RolloutStore
    from restarter.adapters.scheduler import ScheduleGateway
    from restarter.adapters.stepfunctions import ExecutionStarter
    from restarter.adapters.store import AuditLog, ClusterLock, ClusterStore, RestartStore
    from restarter.settings import Settings

T = TypeVar("T")


@dataclass
class Dependencies:
    """What every function shares: the records, the provider, events, restart executions, time."""

    settings: Settings
    clusters: ClusterStore
    restarts: RestartStore
    locks: ClusterLock
    audit: AuditLog
    health: HealthReportStore
    provider: Provider
    events: EventPublisher
    executions: ExecutionStarter | None
    clock: Clock
    # the clients behind the adapters above, which the sets built around this one share
    # (None, for a set of fakes: those sets then make their own)
    clients: AwsClients | None = None


@dataclass
class RolloutDependencies:
    deps: Dependencies
    store: RolloutStore
    executions: ExecutionStarter | None  # of the rollout state machine


@dataclass
class AlarmRecoveryDependencies:
    deps: Dependencies
    recoveries: RecoveryStore
    alarms: AlarmTags
    breaker: BreakerStore


@dataclass
class QueueDependencies:
    deps: Dependencies
    rollouts: RolloutDependencies  # a message may carry a rollout
    visibility: MessageVisibility
    idempotency: IdempotencyTable


# ---------------------------------------------------------------- building


def build_dependencies(
    settings: Settings, clock: Clock | None = None, clients: AwsClients | None = None
) -> Dependencies:
    """`clients`: the embedded AWS passes its process-wide ones (a new session per test would load
    every service model again); a Lambda container makes its own."""
    from restarter.adapters.clients import AwsClients
    from restarter.adapters.clock import SystemClock
    from restarter.adapters.ec2_provider import Ec2Provider
    from restarter.adapters.events import EventPublisher
    from restarter.adapters.health_store import HealthReportStore
    from restarter.adapters.stepfunctions import ExecutionStarter
    from restarter.adapters.store import AuditLog, ClusterLock, ClusterStore, RestartStore

    clients = clients or AwsClients(settings.region)
    dynamodb = clients.dynamodb()
    return Dependencies(
        settings=settings,
        clusters=ClusterStore(dynamodb, settings.clusters_table),
        restarts=RestartStore(dynamodb, settings.restarts_table),
        locks=ClusterLock(dynamodb, settings.locks_table),
        audit=AuditLog(dynamodb, settings.audit_table),
        health=HealthReportStore(dynamodb, settings.health_table),
        provider=Ec2Provider(clients.ec2(), clients.ssm()),
        events=EventPublisher(clients.events(), settings.event_bus_name),
        executions=(
            ExecutionStarter(clients.stepfunctions(), settings.state_machine_arn)
            if settings.state_machine_arn
            else None
        ),
        clock=clock or SystemClock(),
        clients=clients,
    )


def _clients(deps: Dependencies) -> AwsClients:
    from restarter.adapters.clients import AwsClients

    return deps.clients or AwsClients(deps.settings.region)


def build_rollout_dependencies(
    deps: Dependencies, *, table: str | None = None, state_machine_arn: str | None = None
) -> RolloutDependencies:
    """Around `deps`; the table and state machine are the settings' unless given."""
    from restarter.adapters.rollout_store import RolloutStore
    from restarter.adapters.stepfunctions import ExecutionStarter

    clients = _clients(deps)
    arn = state_machine_arn or deps.settings.rollout_state_machine_arn
    return RolloutDependencies(
        deps=deps,
        store=RolloutStore(clients.dynamodb(), table or deps.settings.rollouts_table),
        executions=ExecutionStarter(clients.stepfunctions(), arn) if arn else None,
    )


def build_alarm_recovery(deps: Dependencies) -> AlarmRecoveryDependencies:
    from restarter.adapters.alarms import AlarmTags
    from restarter.adapters.breaker_store import BreakerStore
    from restarter.adapters.recovery_store import RecoveryStore

    clients = _clients(deps)
    return AlarmRecoveryDependencies(
        deps=deps,
        recoveries=RecoveryStore(clients.dynamodb(), deps.settings.recovery_table),
        alarms=AlarmTags(clients.cloudwatch()),
        breaker=BreakerStore(clients.dynamodb(), deps.settings.recovery_table),
    )


def build_queue_dependencies(deps: Dependencies, rollouts: RolloutDependencies | None = None) -> QueueDependencies:
    from restarter.adapters.idempotency import IdempotencyTable
    from restarter.adapters.queues import MessageVisibility

    clients = _clients(deps)
    return QueueDependencies(
        deps=deps,
        rollouts=rollouts or build_rollout_dependencies(deps),
        visibility=MessageVisibility(clients.sqs()),
        idempotency=IdempotencyTable(clients.dynamodb(), deps.settings.idempotency_table),
    )


def build_schedule_gateway(deps: Dependencies) -> ScheduleGateway:
    """Raises `RestarterError` when the function has no schedule target (only the Api function has)."""
    from restarter.adapters.scheduler import ScheduleGateway

    settings = deps.settings
    if not settings.schedule_target_arn or not settings.scheduler_role_arn:
        raise RestarterError(
            "Schedules are not configured", {"settings": ["SCHEDULE_TARGET_ARN", "SCHEDULER_ROLE_ARN"]}
        )
    return ScheduleGateway(
        _clients(deps).scheduler(),
        target_arn=settings.schedule_target_arn,
        role_arn=settings.scheduler_role_arn,
        dead_letter_arn=settings.schedule_dead_letter_arn,
    )


def build_account_probe(deps: Dependencies) -> AccountProbe:
    from restarter.adapters.account_probe import AccountProbe

    clients = _clients(deps)
    return AccountProbe(clients.dynamodb(), clients.events(), clients.iam())


def get_account_probe() -> AccountProbe:
    """The diagnostics' probe, around the container's clients (not kept: diagnostics are rare)."""
    return build_account_probe(get_dependencies())


def build_api_key_store(settings: Settings) -> ApiKeyStore:
    """The authorizer's store, on a client of its own that fails fast (see AUTHORIZER_CLIENT_CONFIG)."""
    from restarter.adapters.api_keys import ApiKeyStore
    from restarter.adapters.clients import AUTHORIZER_CLIENT_CONFIG, AwsClients

    return ApiKeyStore(AwsClients(settings.region).dynamodb(AUTHORIZER_CLIENT_CONFIG), settings.api_keys_table)


# ---------------------------------------------------------------- one of each per container


class _PerContainer(Generic[T]):
    """A set built from its sources on first use, and again when a source is replaced; unless a
    set is installed (the local runtime, tests), which wins until `install(None)`."""

    def __init__(self, build: Callable[..., T], sources: Callable[[], tuple[Any, ...]]) -> None:
        self._build = build
        self._sources = sources
        self._built: tuple[tuple[Any, ...], T] | None = None
        self._installed: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._installed is not None:
            return self._installed
        sources = self._sources()
        with self._lock:
            built = self._built
            if built is None or any(a is not b for a, b in zip(built[0], sources, strict=True)):
                built = (sources, self._build(*sources))
                self._built = built
            return built[1]

    def install(self, value: T | None) -> None:
        with self._lock:
            self._installed = value
            self._built = None


_dependencies: _PerContainer[Dependencies] = _PerContainer(build_dependencies, lambda: (get_settings(),))
_rollouts: _PerContainer[RolloutDependencies] = _PerContainer(build_rollout_dependencies, lambda: (get_dependencies(),))
_alarm_recovery: _PerContainer[AlarmRecoveryDependencies] = _PerContainer(
    build_alarm_recovery, lambda: (get_dependencies(),)
)
_queue: _PerContainer[QueueDependencies] = _PerContainer(
    build_queue_dependencies, lambda: (get_dependencies(), get_rollout_dependencies())
)
_schedules: _PerContainer[ScheduleGateway] = _PerContainer(build_schedule_gateway, lambda: (get_dependencies(),))
_api_keys: _PerContainer[ApiKeyStore] = _PerContainer(build_api_key_store, lambda: (get_settings(),))


def get_dependencies() -> Dependencies:
    return _dependencies.get()


def use_dependencies(dependencies: Dependencies | None) -> None:
    """Install a set (the local runtime, tests); None rebuilds from the settings on next use."""
    _dependencies.install(dependencies)


def get_rollout_dependencies() -> RolloutDependencies:
    return _rollouts.get()


def use_rollout_dependencies(dependencies: RolloutDependencies | None) -> None:
    _rollouts.install(dependencies)


def get_alarm_recovery() -> AlarmRecoveryDependencies:
    return _alarm_recovery.get()


def use_alarm_recovery(dependencies: AlarmRecoveryDependencies | None) -> None:
    _alarm_recovery.install(dependencies)


def get_queue_dependencies() -> QueueDependencies:
    return _queue.get()


def use_queue_dependencies(dependencies: QueueDependencies | None) -> None:
    _queue.install(dependencies)


def get_schedule_gateway() -> ScheduleGateway:
    return _schedules.get()


def use_schedule_gateway(gateway: ScheduleGateway | None) -> None:
    _schedules.install(gateway)


def get_api_key_store() -> ApiKeyStore:
    return _api_keys.get()


def use_api_key_store(store: ApiKeyStore | None) -> None:
    _api_keys.install(store)
