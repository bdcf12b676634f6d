"""The endpoints only `restarter serve` has, beside the API: what a real deployment leaves to
AWS or to the world, driven by hand on the embedded AWS.

- `POST /local/faults`: inject a fault (the fleet file's kinds, GPU faults included; `clear_gpu`
  removes an instance's GPU faults) while serving.
- `POST /local/schedules/{name}/fire`: deliver a schedule's firing now; moto stores schedules
  but never fires them.

Both take a POST with the server's own key, and act for the key's tenant.
"""

from __future__ import annotations

import json
import re

from botocore.exceptions import ClientError
from pydantic import ValidationError

from restarter.domain.models import Cluster
from restarter.domain.schedules import schedule_group
from restarter_local.engine import LocalAws
from restarter_local.fleet_file import Fault, apply_fault
from restarter_local.gateway import GatewayResponse
from restarter_local.http_handler import error_envelope

FAULTS_PATH = "/local/faults"
FIRE_SCHEDULE_PATH = re.compile(r"^/local/schedules/(?P<name>[0-9A-Za-z_.-]{1,64})/fire$")


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json"}


class LocalControl:
    """The local endpoints of one running server: its engine, its key, its tenant and fleet."""

    def __init__(self, engine: LocalAws, api_key: str, tenant: str, clusters: list[Cluster]) -> None:
        self.engine = engine
        self.api_key = api_key
        self.tenant = tenant
        self.clusters = clusters

    def answer(self, method: str, path: str, headers: dict[str, str], body: str | None) -> GatewayResponse | None:
        """The answer when `path` is a local endpoint; None for the API's own paths."""
        if path == FAULTS_PATH:
            return self._inject_fault(method, headers, body)
        if fire := FIRE_SCHEDULE_PATH.match(path):
            return self._fire_schedule(method, headers, fire["name"])
        return None

    def _refusal(self, method: str, headers: dict[str, str]) -> GatewayResponse | None:
        """The local endpoints take a POST with the server's own key."""
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if authorization != f"Bearer {self.api_key}":
            return GatewayResponse(
                401, _json_headers(), error_envelope("UNAUTHORIZED", "Missing or invalid API key").decode()
            )
        if method != "POST":
            return GatewayResponse(405, _json_headers(), error_envelope("METHOD_NOT_ALLOWED", "Use POST").decode())
        return None

    def _fire_schedule(self, method: str, headers: dict[str, str], name: str) -> GatewayResponse:
        """`POST /local/schedules/{name}/fire`: deliver the key's tenant schedule's firing now,
        as EventBridge Scheduler would at its scheduled time."""
        refused = self._refusal(method, headers)
        if refused is not None:
            return refused
        try:
            answer = self.engine.fire_schedule(name, schedule_group(self.tenant))
        except ClientError:
            message = f"No schedule {name} for this key's tenant"
            return GatewayResponse(404, _json_headers(), error_envelope("NOT_FOUND", message, {"name": name}).decode())
        except ValueError as exc:
            return GatewayResponse(409, _json_headers(), error_envelope("INVALID_STATE", str(exc)).decode())
        return GatewayResponse(200 if answer.get("success") else 400, _json_headers(), json.dumps(answer))

    def _inject_fault(self, method: str, headers: dict[str, str], body: str | None) -> GatewayResponse:
        """`POST /local/faults`: inject a fault while serving."""
        refused = self._refusal(method, headers)
        if refused is not None:
            return refused
        try:
            fault = Fault.model_validate_json(body or "{}")
            apply_fault(self.engine, fault, {c.id: c for c in self.clusters})
        except (ValueError, ValidationError) as exc:
            message = " ".join(str(exc).split())[:500]
            return GatewayResponse(400, _json_headers(), error_envelope("VALIDATION_ERROR", message).decode())
        payload = {"success": True, "data": fault.model_dump(mode="json", exclude_none=True)}
        return GatewayResponse(200, _json_headers(), json.dumps(payload))
