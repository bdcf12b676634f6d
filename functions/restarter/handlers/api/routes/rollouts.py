"""Start a rollout (one restart request over many clusters), read it, resume it."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path

from restarter.domain.rollouts import ROLLOUT_ID_PATTERN, RolloutSpec
from restarter.handlers.api.depends import Reader, Restarter, Rollouts
from restarter.handlers.api.envelopes import ok
from restarter.handlers.api.models import API_PREFIX, ResumeRolloutRequest, RolloutResponse, rollout_view
from restarter.handlers.api.openapi import documented
from restarter.handlers.api.parameters import IDEMPOTENCY_DOC, IDEMPOTENCY_HEADER
from restarter.handlers.api.route_table import DeclaredRouter
from restarter.services import restart_api, rollouts

router = DeclaredRouter()


@router.post(
    f"{API_PREFIX}/rollouts",
    summary="Start a rollout: one restart request over many clusters",
    description=(
        "Targets by `cluster_ids`, `labels` or `name_pattern` (your clusters only); `max_concurrency` restarts at a "
        "time; a `failure_threshold` after which no new restart starts; no restart starts after "
        "`maintenance_window.end`. Production clusters (the `production_label`) get a 15-minute grace period and "
        "`preserve_state`. An `Idempotency-Key` header makes a retried request answer the same rollout."
    ),
    tags=["Rollouts"],
    responses=documented(202, "Rollout started", RolloutResponse, body=True),
)
def start_rollout(
    body: Annotated[RolloutSpec, Body()],
    who: Restarter,
    rd: Rollouts,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
) -> Response[str]:
    record, created = restart_api.start_rollout(
        rd, body, tenant_id=who.tenant_id, requested_by=who.requested_by, idempotency_key=idempotency_key
    )
    return ok(rollout_view(record), who.request_id, status=202 if created else 200, replayed=not created)


@router.get(
    f"{API_PREFIX}/rollouts/<rollout_id>",
    summary="Get a rollout: per-cluster results in the seed's shape",
    tags=["Rollouts"],
    responses=documented(200, "The rollout", RolloutResponse, read=True),
)
def get_rollout(
    rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)], who: Reader, rd: Rollouts
) -> Response[str]:
    return ok(rollout_view(rollouts.get_rollout(rd, rollout_id, tenant_id=who.tenant_id)), who.request_id)


@router.post(
    f"{API_PREFIX}/rollouts/<rollout_id>/resume",
    summary="Resume a rollout: run again every cluster that has not succeeded",
    description=(
        "Clusters that succeeded keep their result and are not restarted again; the others keep their earlier "
        "error until they run again. An optional `maintenance_window` (the rollout's window shape) resumes it in a "
        "later window and is recorded on the rollout; without it the rollout's window stays. An `Idempotency-Key` "
        "header makes a retried request answer the same resume (200, `replayed`) instead of resuming again."
    ),
    tags=["Rollouts"],
    responses=documented(202, "Rollout resumed", RolloutResponse, body=True),
)
def resume_rollout(
    rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)],
    who: Restarter,
    rd: Rollouts,
    body: Annotated[ResumeRolloutRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
) -> Response[str]:
    record, resumed = rollouts.resume_rollout(
        rd,
        rollout_id,
        tenant_id=who.tenant_id,
        window=body.maintenance_window if body is not None else None,
        idempotency_key=f"{who.tenant_id}#{idempotency_key}" if idempotency_key else None,
        requested_by=who.requested_by,
    )
    return ok(rollout_view(record), who.request_id, status=202 if resumed else 200, replayed=not resumed)
