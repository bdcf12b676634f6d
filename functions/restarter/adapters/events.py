"""Publishing restart progress to EventBridge, so other systems can follow a restart.

Events are notifications, not part of a restart: when the bus refuses one, the event is logged
and counted, and the restart goes on. A restart must never fail, roll back or start twice
because a notification could not be sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from restarter.adapters.aws_errors import call
from restarter.domain.errors import RestarterError
from restarter.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef


SOURCE = "restarter"


class EventPublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> bool:
        """Send one event; False (logged, counted) when the bus refused it."""
        entry: PutEventsRequestEntryTypeDef = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "EventBusName": self._bus,
            "Resources": resources or [],
        }
        try:
            response = call("events:PutEvents", lambda: self._client.put_events(Entries=[entry]))
        except RestarterError as exc:
            self._not_published(detail_type, exc.code, exc.details.get("aws_error_code"))
            return False
        if response.get("FailedEntryCount"):
            failed = (response.get("Entries") or [{}])[0]
            self._not_published(detail_type, "PUT_EVENTS_ENTRY_FAILED", failed.get("ErrorCode"))
            return False
        return True

    @staticmethod
    def _not_published(detail_type: str, code: str, aws_error_code: Any) -> None:
        logger.warning("event not published", detail_type=detail_type, error_code=code, aws_error_code=aws_error_code)
        metrics.add_metric(name="EventsNotPublished", unit=MetricUnit.Count, value=1)
