"""Request bodies the API will not read, refused with the envelope before Powertools sees them.

Powertools' validation runs before any middleware, so what it would get wrong is settled here:
bodies too large or not JSON are refused before routing (`refuse_unreadable_body`), the
Content-Type is lower-cased for it, and `json_body` (the resolver's JSON deserializer) refuses
what `json.loads` would raise past Powertools as a 500.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from restarter.handlers.api.envelopes import JSON_MEDIA_TYPE, proxy_error
from restarter.handlers.api.route_table import RouteTable

MAX_BODY_BYTES = 64 * 1024


class _OversizedInt:
    """Stands in for an integer literal with more digits than `int()` converts."""


_OVERSIZED_INT = _OversizedInt()


def json_body(text: str) -> Any:
    """A request body as JSON. What `json.loads` would raise past Powertools (and answer 500)
    is refused 400: nesting deeper than the interpreter's recursion limit, and integers with more
    digits than `int()` converts (the offending field is named)."""
    oversized: list[bool] = []

    def parse_int(digits: str) -> Any:
        try:
            return int(digits)
        except ValueError:  # sys.get_int_max_str_digits()
            oversized.append(True)
            return _OVERSIZED_INT

    try:
        value = json.loads(text, parse_int=parse_int)
    except RecursionError:
        raise RequestValidationError(
            [{"type": "json_too_deep", "loc": ("body",), "msg": "JSON nested too deeply"}]
        ) from None
    if oversized:
        raise RequestValidationError(
            [
                {"type": "int_too_long", "loc": ("body", *where), "msg": "Integer has too many digits"}
                for where in _locations_of(value, _OVERSIZED_INT)
            ]
        )
    return value


def _locations_of(value: Any, marker: object) -> list[tuple[int | str, ...]]:
    """Where `marker` sits in parsed JSON (walked without recursion: the nesting may be deep)."""
    found: list[tuple[int | str, ...]] = []
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        node, where = stack.pop()
        if node is marker:
            found.append(where)
        elif isinstance(node, dict):
            stack.extend((child, (*where, str(key))) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(node))
    return sorted(found, key=str)


def refuse_unreadable_body(event: dict[str, Any], routes: RouteTable) -> dict[str, Any] | None:
    """Bodies we will not read, refused before routing: too large, or not JSON.

    A route that reads a body refuses another content type even with an empty body (a form
    post is not an empty JSON object); no content type at all with an empty body is `{}`.
    """
    body = event.get("body") or ""
    if len(body.encode()) > MAX_BODY_BYTES:
        return proxy_error(413, "VALIDATION_ERROR", "Request body too large", {"max_bytes": MAX_BODY_BYTES})
    content_type = _normalized_content_type(event)
    media_type = content_type.split(";")[0].strip()
    if content_type and media_type != JSON_MEDIA_TYPE and (body.strip() or _reads_a_body(event, routes)):
        return proxy_error(
            415, "VALIDATION_ERROR", "Content-Type must be application/json", {"content_type": content_type[:100]}
        )
    return None


def _normalized_content_type(event: dict[str, Any]) -> str:
    """The request's Content-Type, lower-cased in the event too: media types are case-insensitive
    (RFC 9110) but Powertools compares them as written, and refuses `APPLICATION/JSON`."""
    found = ""
    for field in ("headers", "multiValueHeaders"):
        headers = event.get(field) or {}
        for name, value in list(headers.items()):
            if name.lower() != "content-type":
                continue
            if isinstance(value, list):
                headers[name] = [str(v).strip().lower() for v in value]
                found = headers[name][-1] if headers[name] else found
            elif value is not None:
                headers[name] = found = str(value).strip().lower()
    return found


def _reads_a_body(event: dict[str, Any], routes: RouteTable) -> bool:
    return routes.reads_body(str(event.get("httpMethod") or ""), str(event.get("path") or ""))
