"""The Lambda authorizer's context: how a principal travels from the authorizer to the API.

API Gateway hands the authorizer's `context` to the API as `requestContext.authorizer`, with
string, number or boolean values only (and keys of its own, such as `principalId` and
`integrationLatency`, beside ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from restarter.domain.auth import Principal, UnauthorizedError


def authorizer_context(principal: Principal) -> dict[str, str]:
    """What the authorizer answers as its context: `{"tenant_id", "key_id", "scopes": "read,restart"}`."""
    return {"tenant_id": principal.tenant_id, "key_id": principal.key_id, "scopes": ",".join(principal.sorted_scopes())}


def principal_from_authorizer_context(context: Mapping[str, Any] | None) -> Principal:
    """Read back `authorizer_context()` from `requestContext.authorizer` (keys of API Gateway's
    are ignored). Raises `UnauthorizedError` if incomplete."""
    context = context or {}
    try:
        return Principal(
            key_id=str(context["key_id"]),
            tenant_id=str(context["tenant_id"]),
            scopes=frozenset(s for s in str(context["scopes"]).split(",") if s),  # type: ignore[arg-type]
        )
    except (KeyError, ValidationError) as exc:
        raise UnauthorizedError("The request carries no valid authorizer context") from exc
