"""EventBridge Scheduler: create, read, list and delete the schedules that start rollouts."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.errors import ConflictError, NotFoundError, RequestValidationError

# Scheduler retries a failed invocation for a day by default; a maintenance firing that is
# hours late is worth less than a clear record in the dead-letter queue.
RETRY_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 3600


class ScheduleGateway:
    def __init__(self, client: Any, *, target_arn: str, role_arn: str, dead_letter_arn: str | None) -> None:
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

    def create(
        self,
        *,
        group: str,
        name: str,
        expression: str,
        timezone: str,
        flexible_window_minutes: int,
        payload: str,
        description: str | None,
        enabled: bool,
    ) -> str:
        target: dict[str, Any] = {
            "Arn": self._target_arn,
            "RoleArn": self._role_arn,
            "Input": payload,
            "RetryPolicy": {"MaximumRetryAttempts": RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": MAX_EVENT_AGE_SECONDS},
        }
        if self._dead_letter_arn:
            target["DeadLetterConfig"] = {"Arn": self._dead_letter_arn}
        window = (
            {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": flexible_window_minutes}
            if flexible_window_minutes
            else {"Mode": "OFF"}
        )
        kwargs: dict[str, Any] = {
            "GroupName": group,
            "Name": name,
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": window,
            "Target": target,
            "State": "ENABLED" if enabled else "DISABLED",
            "ActionAfterCompletion": "NONE",  # a one-time schedule stays listed after it fired
        }
        if description:
            kwargs["Description"] = description
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

    def get(self, group: str, name: str) -> dict[str, Any]:
        try:
            return dict(self._client.get_schedule(GroupName=group, Name=name))
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
