"""Maintenance rollouts on a schedule (EventBridge Scheduler): create, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from restarter.domain.schedules import SCHEDULE_NAME_PATTERN, ScheduleRequest
from restarter.handlers.api.depends import Adapters, Reader, Restarter, Schedules
from restarter.handlers.api.envelopes import ok
from restarter.handlers.api.models import (
    API_PREFIX,
    ScheduleCreatedResponse,
    ScheduleListResponse,
    ScheduleResponse,
)
from restarter.handlers.api.openapi import documented
from restarter.handlers.api.route_table import DeclaredRouter
from restarter.services import restart_api, schedules

router = DeclaredRouter()


@router.post(
    f"{API_PREFIX}/schedules",
    summary="Schedule a maintenance rollout (EventBridge Scheduler)",
    description=(
        "`at(...)` once, `rate(...)` or `cron(...)` repeatedly, in `timezone`. Each firing resolves the targets "
        "anew and starts a rollout whose window ends `window_minutes` after the scheduled time. A firing "
        "delivered twice starts one rollout."
    ),
    tags=["Schedules"],
    responses=documented(201, "Schedule created", ScheduleCreatedResponse, body=True),
)
def create_schedule(
    body: Annotated[ScheduleRequest, Body()], who: Restarter, deps: Adapters, gateway: Schedules
) -> Response[str]:
    view, covered = schedules.create_schedule(deps, gateway, who.tenant_id, body, who.requested_by)
    return ok(view, who.request_id, status=201, clusters_now=covered)


@router.get(
    f"{API_PREFIX}/schedules",
    summary="List your schedules",
    tags=["Schedules"],
    responses=documented(200, "Schedules", ScheduleListResponse, read=True),
)
def list_schedules(who: Reader, gateway: Schedules) -> Response[str]:
    views = schedules.list_schedules(gateway, who.tenant_id)
    return ok([v.model_dump(mode="json") for v in views], who.request_id)


@router.get(
    f"{API_PREFIX}/schedules/<name>",
    summary="Get a schedule",
    tags=["Schedules"],
    responses=documented(200, "The schedule", ScheduleResponse, read=True),
)
def get_schedule(
    name: Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN)], who: Reader, gateway: Schedules
) -> Response[str]:
    return ok(schedules.get_schedule(gateway, who.tenant_id, name), who.request_id)


@router.delete(
    f"{API_PREFIX}/schedules/<name>",
    summary="Delete a schedule",
    description="Future firings stop; a rollout it already started goes on.",
    tags=["Schedules"],
    responses=documented(200, "Schedule deleted", ScheduleResponse),
)
def delete_schedule(
    name: Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN)], who: Restarter, deps: Adapters, gateway: Schedules
) -> Response[str]:
    return ok(restart_api.delete_schedule(deps, gateway, who.tenant_id, name, who.requested_by), who.request_id)
