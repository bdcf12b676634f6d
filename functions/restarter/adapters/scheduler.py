"""EventBridge Scheduler: create, read, list and delete the schedules that start rollouts.

A schedule's target `Input` is a `ScheduleFiring` (domain.schedules) with Scheduler's context
attributes in place of the firing's facts: Scheduler replaces `<aws.scheduler.scheduled-time>`
and the others when it invokes the target. Reading a schedule back turns Scheduler's GetSchedule
answer into the API's `ScheduleView`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.errors import ConflictError, NotFoundError, RequestValidationError
from restarter.domain.schedules import DEFAULT_WINDOW_MINUTES, ScheduleRequest, ScheduleView

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient


# Scheduler retries a failed invocation for a day by default; a maintenance firing that is
# hours late is worth less than a clear record in the dead-letter queue.
RETRY_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 3600

# Scheduler's context attributes, replaced in the target's Input at each invocation.
SCHEDULE_ARN = "<aws.scheduler.schedule-arn>"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
EXECUTION_ID = "<aws.scheduler.execution-id>"
ATTEMPT_NUMBER = "<aws.scheduler.attempt-number>"


def firing_input(request: ScheduleRequest, tenant_id: str | None) -> str:
    """The target's Input: the firing with Scheduler's placeholders for what only it knows."""
    document: dict[str, Any] = {
        "schedule_arn": SCHEDULE_ARN,
        "schedule_name": request.name,
        "tenant_id": tenant_id,
        "scheduled_time": SCHEDULED_TIME,
        "execution_id": EXECUTION_ID,
        "attempt": ATTEMPT_NUMBER,
        "window_minutes": request.window_minutes,
        "rollout": request.rollout.model_dump(mode="json", exclude_unset=True),
    }
    return json.dumps(document, separators=(",", ":"))


def fill_context_attributes(template: str, *, schedule_arn: str, scheduled_time: datetime, attempt: int = 1) -> str:
    """What Scheduler does to the Input at invocation (the local runtime fires schedules with it)."""
    stamp = scheduled_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    execution_id = hashlib.sha256(f"{schedule_arn}|{stamp}|{attempt}".encode()).hexdigest()[:16]
    return (
        template.replace(SCHEDULE_ARN, schedule_arn)
        .replace(SCHEDULED_TIME, stamp)
        .replace(EXECUTION_ID, execution_id)
        .replace(ATTEMPT_NUMBER, str(attempt))
    )


def schedule_view(described: Mapping[str, Any], api_prefix: str = "/v1") -> ScheduleView:
    """From Scheduler's GetSchedule answer; the rollout comes back out of the target's Input."""
    window: Any = described.get("FlexibleTimeWindow") or {}
    target: Any = described.get("Target") or {}
    try:
        document = json.loads(target.get("Input") or "{}")
    except ValueError:
        document = {}
    created = described.get("CreationDate")
    name = str(described["Name"])
    return ScheduleView(
        name=name,
        arn=str(described["Arn"]),
        schedule_expression=str(described["ScheduleExpression"]),
        timezone=str(described.get("ScheduleExpressionTimezone") or "UTC"),
        flexible_window_minutes=int(window.get("MaximumWindowInMinutes") or 0)
        if window.get("Mode") == "FLEXIBLE"
        else 0,
        window_minutes=int(document.get("window_minutes") or DEFAULT_WINDOW_MINUTES),
        enabled=described.get("State", "ENABLED") == "ENABLED",
        description=described.get("Description") or None,
        rollout=document.get("rollout") or {},
        created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(created, datetime) else None,
        links={"self": f"{api_prefix}/schedules/{name}"},
    )


class ScheduleGateway:
    def __init__(
        self, client: EventBridgeSchedulerClient, *, target_arn: str, role_arn: str, dead_letter_arn: str | None
    ) -> None:
        self._client = client
        self._target_arn = target_arn
        self._role_arn = role_arn
        self._dead_letter_arn = dead_letter_arn

    def ensure_group(self, group: str) -> None:
        try:
            self._client.get_schedule_group(Name=group)
            return
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                with translated("scheduler:GetScheduleGroup"):
                    raise
        try:
            self._client.create_schedule_group(Name=group)
        except ClientError as exc:
            if error_code(exc) != "ConflictException":  # created meanwhile: fine
                with translated("scheduler:CreateScheduleGroup"):
                    raise

    def create(self, group: str, request: ScheduleRequest, tenant_id: str | None) -> str:
        """Create the schedule whose firings start `request.rollout` for `tenant_id`."""
        name = request.name
        target: dict[str, Any] = {
            "Arn": self._target_arn,
            "RoleArn": self._role_arn,
            "Input": firing_input(request, tenant_id),
            "RetryPolicy": {"MaximumRetryAttempts": RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": MAX_EVENT_AGE_SECONDS},
        }
        if self._dead_letter_arn:
            target["DeadLetterConfig"] = {"Arn": self._dead_letter_arn}
        window = (
            {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": request.flexible_window_minutes}
            if request.flexible_window_minutes
            else {"Mode": "OFF"}
        )
        kwargs: dict[str, Any] = {
            "GroupName": group,
            "Name": name,
            "ScheduleExpression": request.schedule_expression,
            "ScheduleExpressionTimezone": request.timezone,
            "FlexibleTimeWindow": window,
            "Target": target,
            "State": "ENABLED" if request.enabled else "DISABLED",
            "ActionAfterCompletion": "NONE",  # a one-time schedule stays listed after it fired
        }
        if request.description:
            kwargs["Description"] = request.description
        try:
            return str(self._client.create_schedule(**kwargs)["ScheduleArn"])
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConflictException":
                raise ConflictError("A schedule with this name exists", {"name": name}) from exc
            if code == "ValidationException":
                message = str(exc.response.get("Error", {}).get("Message", ""))
                raise RequestValidationError(
                    "Invalid schedule", {"errors": [{"field": "schedule", "message": message}]}
                ) from exc
            with translated("scheduler:CreateSchedule"):
                raise

    def get(self, group: str, name: str) -> ScheduleView:
        try:
            return schedule_view(self._client.get_schedule(GroupName=group, Name=name))
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise NotFoundError("Schedule not found", {"name": name}) from exc
            with translated("scheduler:GetSchedule"):
                raise

    def list_names(self, group: str) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"GroupName": group, "MaxResults": 100}
        while True:
            try:
                page = self._client.list_schedules(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return []
                with translated("scheduler:ListSchedules"):
                    raise
            names += [str(s["Name"]) for s in page.get("Schedules", [])]
            if not page.get("NextToken"):
                return sorted(names)
            kwargs["NextToken"] = page["NextToken"]

    def delete(self, group: str, name: str) -> None:
        try:
            self._client.delete_schedule(GroupName=group, Name=name)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise NotFoundError("Schedule not found", {"name": name}) from exc
            with translated("scheduler:DeleteSchedule"):
                raise
