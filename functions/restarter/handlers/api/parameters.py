"""The path and header rules the routes share (and the error answers name)."""

from __future__ import annotations

from typing import Any

CLUSTER_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
RESTART_ID = r"^rst_[a-z0-9]{1,64}$"

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_CHARS = 200
# Visible ASCII only: no spaces, no control characters, never truncated (two long keys must not collide).
IDEMPOTENCY_KEY_PATTERN = rf"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$"
IDEMPOTENCY_KEY_RULE = f"must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters (no spaces)"
IDEMPOTENCY_DOC: dict[str, Any] = {
    "pattern": IDEMPOTENCY_KEY_PATTERN,
    "max_length": IDEMPOTENCY_KEY_MAX_CHARS,
    "description": (
        "Makes a retry safe: the same key with the same request answers the first answer again; the same "
        f"key with another request is 409 `CONFLICT`. Keys are per tenant, kept 24 hours, and {IDEMPOTENCY_KEY_RULE}."
    ),
}
