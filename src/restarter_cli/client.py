"""A small client of the Restart Cluster API (standard library only), for the CLI and scripts.

Works against `restarter serve` and a deployed stage alike: base URL and key come from
arguments or `RESTARTER_URL` / `RESTARTER_API_KEY`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

DEFAULT_URL = "http://127.0.0.1:8080/v1"


class ApiUnavailableError(Exception):
    """The API could not be reached at all."""


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and bool(self.body.get("success"))

    @property
    def error(self) -> dict[str, Any]:
        return dict(self.body.get("error") or {})


class RestarterClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("RESTARTER_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("RESTARTER_API_KEY")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None) -> ApiAnswer:
        url = f"{self.url}{path}"
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return ApiAnswer(response.status, _decode(response.read()))
        except urllib.error.HTTPError as exc:
            return ApiAnswer(exc.code, _decode(exc.read()))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ApiUnavailableError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from exc

    def restart(self, cluster_id: str, body: dict[str, Any]) -> ApiAnswer:
        return self.request("POST", f"/clusters/{cluster_id}/restart", body)

    def restart_status(self, restart_id: str) -> ApiAnswer:
        return self.request("GET", f"/restarts/{restart_id}")

    def start_rollout(self, spec: dict[str, Any]) -> ApiAnswer:
        return self.request("POST", "/rollouts", spec)

    def rollout(self, rollout_id: str) -> ApiAnswer:
        return self.request("GET", f"/rollouts/{rollout_id}")

    def create_schedule(self, body: dict[str, Any]) -> ApiAnswer:
        return self.request("POST", "/schedules", body)

    def schedules(self) -> ApiAnswer:
        return self.request("GET", "/schedules")

    def delete_schedule(self, name: str) -> ApiAnswer:
        return self.request("DELETE", f"/schedules/{name}")

    def clusters(self, status: str | None = None, label: str | None = None) -> ApiAnswer:
        return self.request("GET", "/clusters", query={"status": status, "label": label})  # type: ignore[dict-item]


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(raw or b"{}")
    except ValueError:
        return {"success": False, "error": {"code": "INTERNAL", "message": "The API answered something not JSON"}}
    return decoded if isinstance(decoded, dict) else {"success": False, "error": {"code": "INTERNAL"}}
