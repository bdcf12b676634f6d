"""Publishing restart progress to EventBridge, so other systems can follow a restart."""

from __future__ import annotations

import json
from typing import Any

from restarter.adapters.aws_errors import call

SOURCE = "restarter"


class EventPublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "EventBusName": self._bus,
            "Resources": resources or [],
        }
        call("events:PutEvents", lambda: self._client.put_events(Entries=[entry]))
