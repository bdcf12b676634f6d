"""What a route receives through Powertools `Depends`: who calls, with the scope the route needs,
and the container's adapters.

Powertools resolves these after it validated the path, query, header and body, as the routes
did by hand before, so an invalid request is still 400 before a missing scope is 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from aws_lambda_powertools.event_handler import Depends, Request
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from restarter.adapters.authorizer_context import principal_from_authorizer_context
from restarter.adapters.scheduler import ScheduleGateway
from restarter.domain.auth import Principal, require_scope
from restarter.wiring import (
    Dependencies,
    RolloutDependencies,
    get_dependencies,
    get_rollout_dependencies,
    get_schedule_gateway,
)


@dataclass(frozen=True)
class Caller:
    """The API key's principal (from the authorizer) and the request it sent."""

    principal: Principal
    request_id: str

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def requested_by(self) -> str:
        """How the audit trail and the records name the caller: `tenant/key_id`."""
        return f"{self.principal.tenant_id}/{self.principal.key_id}"


def request_id_of(event: APIGatewayProxyEvent) -> str:
    try:
        return str(event.request_context.request_id or "local")
    except (AttributeError, KeyError):
        return "local"


def principal_of(event: APIGatewayProxyEvent) -> Principal:
    """The caller, as the authorizer described it; no context means API Gateway was bypassed."""
    return principal_from_authorizer_context(event.request_context.authorizer.get_context())


def caller(request: Request) -> Caller:
    event = cast(APIGatewayProxyEvent, request.resolved_event)
    return Caller(principal_of(event), request_id_of(event))


def reader(who: Annotated[Caller, Depends(caller)]) -> Caller:
    require_scope(who.principal, "read")
    return who


def restarter(who: Annotated[Caller, Depends(caller)]) -> Caller:
    require_scope(who.principal, "restart")
    return who


Reader = Annotated[Caller, Depends(reader)]
"""A caller whose key holds the `read` scope."""
Restarter = Annotated[Caller, Depends(restarter)]
"""A caller whose key holds the `restart` scope."""
Adapters = Annotated[Dependencies, Depends(get_dependencies)]
"""The container's stores, provider and clients (built once per container)."""
Rollouts = Annotated[RolloutDependencies, Depends(get_rollout_dependencies)]
"""The rollout store and state machine, around the container's adapters."""
Schedules = Annotated[ScheduleGateway, Depends(get_schedule_gateway)]
"""EventBridge Scheduler, with the target a firing invokes."""
