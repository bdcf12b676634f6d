"""API keys, principals and scopes: the pure rules of who may call the REST API.

A key looks like `rk_<key_id>_<secret>`: `key_id` is 8 lowercase hex characters, safe to log and
show (it names the key, like a username); `secret` is at least 32 URL-safe base64 characters
(`new_key` makes 43, i.e. 256 random bits). Only `hash_key(key)` is ever stored. A key belongs
to one tenant and carries scopes; scopes are independent (`restart` does not imply `read`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from restarter.domain.errors import RequestValidationError, RestarterError

Scope = Literal["read", "restart"]
ALL_SCOPES: tuple[Scope, ...] = get_args(Scope)

KEY_PREFIX = "rk"
KEY_ID_PATTERN = r"^[0-9a-f]{8}$"
SECRET_MIN_LENGTH = 32
SECRET_MAX_LENGTH = 128
_KEY = re.compile(
    rf"^{KEY_PREFIX}_(?P<key_id>[0-9a-f]{{8}})_(?P<secret>[A-Za-z0-9_-]{{{SECRET_MIN_LENGTH},{SECRET_MAX_LENGTH}}})$"
)
_BEARER = "bearer"


class UnauthorizedError(RestarterError):
    """No credentials, or credentials that name no enabled key."""

    code = "UNAUTHORIZED"
    http_status = 401


class ForbiddenError(RestarterError):
    """A known key asked for something its scopes or its tenant do not allow."""

    code = "FORBIDDEN"
    http_status = 403


class Principal(BaseModel):
    """Who is calling: the key (by id, never by value), its tenant and its scopes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(pattern=KEY_ID_PATTERN)
    tenant_id: str = Field(min_length=1, max_length=128)
    scopes: frozenset[Scope] = Field(min_length=1)
    name: str | None = Field(default=None, max_length=200)

    @field_serializer("scopes")
    def _sorted_scopes(self, scopes: frozenset[Scope]) -> list[str]:
        return sorted(scopes)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sorted_scopes(self) -> list[Scope]:
        return sorted(self.scopes)


def build_principal(key_id: str, tenant_id: str, scopes: Iterable[str], name: str | None = None) -> Principal:
    """A principal from untrusted input; bad values raise `RequestValidationError`."""
    try:
        return Principal(key_id=key_id, tenant_id=tenant_id, scopes=frozenset(scopes), name=name)  # type: ignore[arg-type]
    except ValidationError as exc:
        fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        raise RequestValidationError(
            "Invalid API key attributes", {"fields": fields, "allowed_scopes": list(ALL_SCOPES)}
        ) from exc


def parse_bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, trimmed).

    None for a missing header, another scheme, an empty token, or a token with whitespace inside.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != _BEARER or not token or any(c.isspace() for c in token):
        return None
    return token


def split_key(key: str) -> tuple[str, str] | None:
    """`(key_id, secret)` of a well-formed key; None for anything else."""
    match = _KEY.match(key)
    return (match["key_id"], match["secret"]) if match else None


def key_id_of(key: str) -> str | None:
    parts = split_key(key)
    return parts[0] if parts else None


def format_key(key_id: str, secret: str) -> str:
    key = f"{KEY_PREFIX}_{key_id}_{secret}"
    if split_key(key) is None:
        raise RequestValidationError("Malformed API key parts", {"key_id": key_id})
    return key


def new_key() -> str:
    """A fresh key: 32 random bits of id and 256 random bits of secret, from the OS CSPRNG."""
    return format_key(secrets.token_hex(4), secrets.token_urlsafe(32))


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex.

    A fast, unsalted hash is the right tool here, unlike for passwords: every key carries 256 bits
    from a CSPRNG, so guessing a key from its hash (brute force, dictionaries, rainbow tables) is
    infeasible at any hash speed. Slow KDFs (bcrypt, scrypt, argon2) and salts exist to protect
    low-entropy human secrets; here they would only add latency to every authorizer call, and a
    salt would make the hash useless as the table's lookup key.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def require_scope(principal: Principal, scope: Scope) -> None:
    """Raise `ForbiddenError` unless the principal holds `scope`."""
    if not principal.has_scope(scope):
        raise ForbiddenError(
            f"This API key lacks the '{scope}' scope",
            {"required_scope": scope, "granted_scopes": principal.sorted_scopes(), "key_id": principal.key_id},
        )
