"""Scheduled maintenance rollouts (EventBridge Scheduler), as pure rules.

A schedule is stored in EventBridge Scheduler itself, one schedule group per tenant. Its
target is the ScheduledRolloutFunction, which receives a `ScheduleFiring` (how the target's
Input says so is `adapters.scheduler`'s business). The targets are resolved when the schedule
fires (clusters added since are included), and each firing gets its own maintenance window,
from the scheduled time to `window_minutes` later.

A firing's rollout id is derived from the schedule's ARN and the scheduled time, so a firing
delivered twice (Scheduler and Lambda both deliver at least once) starts one rollout.
"""

from __future__ import annotations

import hashlib
import re
import zoneinfo
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from restarter.domain.rollouts import MaintenanceWindow, RolloutSpec, RolloutTargets

SCHEDULE_NAME_PATTERN = r"^[0-9A-Za-z_.-]{1,64}$"
GROUP_PREFIX = "restarter"
DEFAULT_WINDOW_MINUTES = 240

_RATE = re.compile(r"^rate\((?P<value>[1-9][0-9]{0,5}) (?P<unit>minutes?|hours?|days?)\)$")
_AT = re.compile(r"^at\((?P<when>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_CRON = re.compile(r"^cron\((?P<fields>[^()]+)\)$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#-]+$")


def check_schedule_expression(expression: str) -> str:
    """Scheduler's three forms: `at(2026-12-01T02:00:00)`, `rate(7 days)`, and six-field
    `cron(minutes hours day-of-month month day-of-week year)` with `?` in one day field."""
    expression = expression.strip()
    if rate := _RATE.match(expression):
        singular = not rate["unit"].endswith("s")
        if (rate["value"] == "1") != singular:
            raise ValueError("rate takes a singular unit for 1 (rate(1 day)) and a plural one otherwise (rate(7 days))")
        return expression
    if at := _AT.match(expression):
        try:
            datetime.fromisoformat(at["when"])
        except ValueError as exc:
            raise ValueError("at() needs a real date and time, yyyy-mm-ddThh:mm:ss") from exc
        return expression
    if cron := _CRON.match(expression):
        fields = cron["fields"].split()
        if len(fields) != 6:
            raise ValueError("cron() takes six fields: minutes hours day-of-month month day-of-week year")
        if not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError("cron() fields hold digits, names and * ? , - / # L W only")
        if (fields[2] == "?") == (fields[4] == "?"):
            raise ValueError("cron() needs ? in exactly one of day-of-month and day-of-week")
        return expression
    raise ValueError("expected at(yyyy-mm-ddThh:mm:ss), rate(N minutes|hours|days) or cron(six fields)")


def is_one_time(expression: str) -> bool:
    return expression.startswith("at(")


class ScheduleRequest(BaseModel):
    """The body of `POST /v1/schedules`: when, how, and the rollout each firing starts."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SCHEDULE_NAME_PATTERN)
    schedule_expression: str = Field(
        max_length=256,
        description="`at(yyyy-mm-ddThh:mm:ss)`, `rate(N minutes|hours|days)` or `cron(six fields)`",
    )
    timezone: str = Field(default="UTC", max_length=50, description="IANA time zone of the expression")
    window_minutes: int = Field(
        default=DEFAULT_WINDOW_MINUTES,
        ge=1,
        le=1440,
        description="The maintenance window of each firing: no restart starts later than this after the scheduled time",
    )
    # after window_minutes: its validator compares the two
    flexible_window_minutes: int = Field(
        default=0,
        ge=0,
        le=1440,
        description="Scheduler may fire this late (spreads load); 0 = on time. Shorter than window_minutes",
    )
    description: str | None = Field(default=None, max_length=512)
    enabled: bool = True
    rollout: RolloutTargets

    @field_validator("schedule_expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        return check_schedule_expression(value)

    @field_validator("flexible_window_minutes")
    @classmethod
    def _fires_inside_the_window(cls, value: int, info: ValidationInfo) -> int:
        """A firing up to `flexible_window_minutes` late must still leave some window: one that
        fires at (or after) the window's end would skip every cluster."""
        window = info.data.get("window_minutes")
        if window is not None and value >= window:
            raise ValueError(f"must be shorter than window_minutes ({window}): a late firing would skip every cluster")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone; use an IANA name such as UTC or Europe/Berlin") from exc
        return value


class ScheduleFiring(BaseModel):
    """What the ScheduledRolloutFunction receives: the target's Input after Scheduler filled in
    the context attributes."""

    model_config = ConfigDict(extra="ignore")

    schedule_arn: str = Field(pattern=r"^arn:aws[a-z-]*:scheduler:")
    schedule_name: str = Field(pattern=SCHEDULE_NAME_PATTERN)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=128)
    scheduled_time: datetime
    execution_id: str | None = None
    attempt: int | None = None
    window_minutes: int = Field(default=DEFAULT_WINDOW_MINUTES, ge=1, le=1440)
    rollout: RolloutTargets

    @field_validator("scheduled_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("scheduled_time must carry a time zone")
        return value

    def rollout_id(self) -> str:
        """One rollout per schedule and scheduled time, however often the firing is delivered."""
        key = f"{self.schedule_arn}|{self.scheduled_time.isoformat()}"
        return "rol_sch_" + hashlib.sha256(key.encode()).hexdigest()[:24]

    def rollout_spec(self) -> RolloutSpec:
        window = MaintenanceWindow(
            id=f"{self.schedule_name}@{self.scheduled_time.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            end=self.scheduled_time + timedelta(minutes=self.window_minutes),
        )
        return RolloutSpec(**self.rollout.model_dump(exclude_unset=True), maintenance_window=window)


def schedule_group(tenant_id: str) -> str:
    """One Scheduler group per tenant: a tenant lists and deletes only its own schedules.
    Group names allow [0-9A-Za-z_.-], at most 64 characters; other tenant ids are hashed."""
    if re.fullmatch(r"[0-9A-Za-z_.-]{1,50}", tenant_id):
        return f"{GROUP_PREFIX}-{tenant_id}"
    return f"{GROUP_PREFIX}-t{hashlib.sha256(tenant_id.encode()).hexdigest()[:24]}"


class ScheduleView(BaseModel):
    """A schedule as the API shows it."""

    name: str
    arn: str
    schedule_expression: str
    timezone: str
    flexible_window_minutes: int
    window_minutes: int
    enabled: bool
    description: str | None = None
    rollout: dict[str, Any]
    created_at: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
