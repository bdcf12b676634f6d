"""API Gateway (REST) on the embedded AWS: the Lambda authorizer, the proxy event, the gateway
responses, throttling, then the API function, all as `template.yaml` declares them.

`LocalApiGateway.handle` is the whole request path; `RequestsAdapter` plugs it into the
`requests` library so that unchanged API clients (the seed's Python functions, the CLI) can be
pointed at it by base URL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter

from restarter_local.account import ACCOUNT, REGION
from restarter_local.engine import LocalAws

PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/v1/docs"})
API_ID = "local0api1"
STAGE = "local"


def _envelope(code: str, message: str) -> str:
    return json.dumps({"success": False, "error": {"code": code, "message": message, "details": {}}})


@dataclass
class GatewayResponse:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class LocalApiGateway:
    def __init__(self, engine: LocalAws, *, rate_limit: float | None = None, burst: int = 10) -> None:
        self.engine = engine
        self.rate_limit = rate_limit
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the request path
    def handle(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        query: dict[str, list[str]] | None = None,
    ) -> GatewayResponse:
        headers = dict(headers or {})
        authorizer_context: dict[str, Any] = {}
        if path not in PUBLIC_PATHS:
            token = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
            if not token:
                return self._gateway_error(401, "UNAUTHORIZED", "Missing or invalid API key")
            decision = self._authorize(token, method, path)
            if decision is None:
                return self._gateway_error(401, "UNAUTHORIZED", "Missing or invalid API key")
            if decision.get("effect") != "Allow":
                return self._gateway_error(403, "FORBIDDEN", "Access denied")
            authorizer_context = decision["context"]
            if not self._take_token(authorizer_context.get("key_id", "anonymous")):
                return self._gateway_error(429, "RATE_LIMITED", "Too many requests")
        event = self._proxy_event(method, path, headers, body, query or {}, authorizer_context)
        result, errored = self.engine.registry.invoke("ApiFunction", event)
        if errored or not isinstance(result, dict) or "statusCode" not in result:
            return self._gateway_error(502, "INTERNAL", "Internal error")
        response_headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            response_headers[key] = ", ".join(str(v) for v in values)
        return GatewayResponse(int(result["statusCode"]), response_headers, result.get("body") or "")

    def _authorize(self, token: str, method: str, path: str) -> dict[str, Any] | None:
        """Run the TOKEN authorizer; None is its `Unauthorized` (API Gateway answers 401)."""
        event = {
            "type": "TOKEN",
            "authorizationToken": token,
            "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}",
        }
        result, errored = self.engine.registry.invoke("ApiKeyAuthorizerFunction", event)
        if errored:
            return None
        statements = result.get("policyDocument", {}).get("Statement", [])
        effect = "Allow" if statements and all(s.get("Effect") == "Allow" for s in statements) else "Deny"
        context = dict(result.get("context") or {})
        context["principalId"] = result.get("principalId")
        return {"effect": effect, "context": context}

    def _take_token(self, key: str) -> bool:
        if self.rate_limit is None:
            return True
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(tokens=float(self.burst)))
            now = time.monotonic()
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_limit)
            bucket.updated = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True

    @staticmethod
    def _gateway_error(status: int, code: str, message: str) -> GatewayResponse:
        return GatewayResponse(status, {"Content-Type": "application/json"}, _envelope(code, message))

    @staticmethod
    def _proxy_event(
        method: str,
        path: str,
        headers: dict[str, str],
        body: str | None,
        query: dict[str, list[str]],
        authorizer: dict[str, Any],
    ) -> dict[str, Any]:
        """A REST API (v1) Lambda proxy event, shaped like the real one (see events/)."""
        request_id = str(uuid.uuid4())
        return {
            "resource": "/v1/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": {"proxy": path.removeprefix("/v1/")},
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT,
                "apiId": API_ID,
                "authorizer": authorizer or None,
                "httpMethod": method,
                "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
                "path": f"/{STAGE}{path}",
                "protocol": "HTTP/1.1",
                "requestId": request_id,
                "requestTimeEpoch": int(time.time() * 1000),
                "resourcePath": "/v1/{proxy+}",
                "stage": STAGE,
            },
            "body": body,
            "isBase64Encoded": False,
        }


class RequestsAdapter(BaseAdapter):
    """Routes `requests` calls for a base URL (any host) to the local gateway."""

    def __init__(self, gateway: LocalApiGateway) -> None:
        super().__init__()
        self.gateway = gateway

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = urlsplit(request.url or "")
        raw = request.body
        body = raw.decode() if isinstance(raw, bytes) else raw if isinstance(raw, str) else None
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        answer = self.gateway.handle(
            request.method or "GET",
            url.path,
            headers=headers,
            body=body,
            query=parse_qs(url.query),
        )
        response = requests.Response()
        response.status_code = answer.status
        response.headers.update(answer.headers)
        response._content = answer.body.encode()
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        return None
