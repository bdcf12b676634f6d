"""Configuration of the functions: one frozen model, read from the environment once, on first use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    clusters_table: str = "restarter-clusters"
    restarts_table: str = "restarter-restarts"
    locks_table: str = "restarter-locks"
    audit_table: str = "restarter-audit"
    api_keys_table: str = "restarter-api-keys"
    idempotency_table: str = "restarter-idempotency"
    api_wait_budget_seconds: float = 25.0
    event_bus_name: str = "restarter"
    state_machine_arn: str | None = None
    cluster_tag_key: str = "restarter:cluster"
    region: str = "us-east-1"

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            clusters_table=env.get("CLUSTERS_TABLE", defaults.clusters_table),
            restarts_table=env.get("RESTARTS_TABLE", defaults.restarts_table),
            locks_table=env.get("LOCKS_TABLE", defaults.locks_table),
            audit_table=env.get("AUDIT_TABLE", defaults.audit_table),
            api_keys_table=env.get("API_KEYS_TABLE", defaults.api_keys_table),
            idempotency_table=env.get("IDEMPOTENCY_TABLE", defaults.idempotency_table),
            api_wait_budget_seconds=float(env.get("API_WAIT_BUDGET_SECONDS", defaults.api_wait_budget_seconds)),
            event_bus_name=env.get("EVENT_BUS_NAME", defaults.event_bus_name),
            state_machine_arn=env.get("STATE_MACHINE_ARN") or None,
            cluster_tag_key=env.get("CLUSTER_TAG_KEY", defaults.cluster_tag_key),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or defaults.region,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_environment()
