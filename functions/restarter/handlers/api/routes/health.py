"""A cluster's GPU health (read, or checked now) and the tenant's recovery circuit breaker.

Scopes: reading health and the circuit needs `read`. Running a health check needs `restart`:
it runs commands on the nodes (bounded, non-disruptive ones), and its findings can drive
recovery. Closing the circuit needs `restart` too: it resumes paused recoveries, which restart
clusters.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from restarter.adapters.account_probe import AccountProbe
from restarter.handlers.api.depends import Adapters, Reader, Restarter
from restarter.handlers.api.envelopes import ok
from restarter.handlers.api.health_models import (
    CircuitClosedData,
    CircuitClosedResponse,
    CircuitResponse,
    ClusterHealthResponse,
    DiagnosticsResponse,
    HealthCheckStartedResponse,
    resumed_view,
)
from restarter.handlers.api.models import API_PREFIX
from restarter.handlers.api.openapi import documented
from restarter.handlers.api.parameters import CLUSTER_ID
from restarter.handlers.api.route_table import DeclaredRouter
from restarter.services import diagnostics, health_api, node_recovery
from restarter.wiring import AlarmRecoveryDependencies, get_account_probe, get_alarm_recovery

router = DeclaredRouter()
Recovery = Annotated[AlarmRecoveryDependencies, Depends(get_alarm_recovery)]
Probe = Annotated[AccountProbe, Depends(get_account_probe)]


@router.get(
    f"{API_PREFIX}/clusters/<cluster_id>/health",
    summary="Get a cluster's GPU health",
    description=(
        "The last health report of every instance: each GPU (model, uuid, ECC counts, row-remap state), "
        "the findings (Xids with their class, missing GPUs, NVLink) with the action each calls for, and "
        "the verdict. A health check still running is named in `pending_check`."
    ),
    tags=["Health"],
    responses=documented(200, "The cluster's health", ClusterHealthResponse, read=True),
)
def get_cluster_health(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)], who: Reader, deps: Adapters
) -> Response[str]:
    return ok(health_api.cluster_health(deps, who.tenant_id, cluster_id), who.request_id)


@router.post(
    f"{API_PREFIX}/clusters/<cluster_id>/health-check",
    summary="Run a GPU health check now",
    description=(
        "Sends the health script to every instance and answers at once (202) with the check; "
        "`GET /v1/clusters/{id}/health` shows its reports once it has finished. A check already "
        "running is answered instead of starting a second one. Needs the `restart` scope."
    ),
    tags=["Health"],
    responses=documented(202, "Health check started", HealthCheckStartedResponse),
)
def run_health_check(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)], who: Restarter, deps: Adapters
) -> Response[str]:
    check = health_api.start_health_check(deps, who.tenant_id, cluster_id, who.requested_by)
    return ok(check, who.request_id, status=202)


@router.get(
    f"{API_PREFIX}/recovery/circuit",
    summary="Get the recovery circuit breaker",
    description=(
        "The tenant's fleet circuit breaker: automatic recoveries pause while more than its share of the "
        "tenant's clusters are being recovered within its window."
    ),
    tags=["Health"],
    responses=documented(200, "The circuit breaker", CircuitResponse, read=True),
)
def get_circuit(who: Reader, recovery: Recovery) -> Response[str]:
    return ok(node_recovery.breaker_state(recovery, who.tenant_id), who.request_id)


@router.post(
    f"{API_PREFIX}/recovery/circuit/close",
    summary="Close the recovery circuit breaker",
    description=(
        "Closes the tenant's breaker (held closed for one window) and starts the recoveries it paused, "
        "in order. Needs the `restart` scope."
    ),
    tags=["Health"],
    responses=documented(200, "The circuit is closed", CircuitClosedResponse),
)
def close_circuit(who: Restarter, recovery: Recovery) -> Response[str]:
    state, resumed = node_recovery.close_breaker(recovery, who.tenant_id, who.requested_by)
    data = CircuitClosedData(circuit=state, resumed=[resumed_view(o) for o in resumed])
    return ok(data, who.request_id)


@router.get(
    f"{API_PREFIX}/diagnostics",
    summary="Check what a restart needs from the account",
    description=(
        "The stack's tables, event bus and event rules; with `cluster_id`, every instance of the cluster: "
        "it exists, carries the cluster tag, is managed by SSM and online, has GPUs, and the restart's role "
        "may reboot, stop, start and run commands on it (`iam:SimulatePrincipalPolicy`, where allowed). "
        "Each check is `ok`, `missing`, `warning` or `unknown`."
    ),
    tags=["Health"],
    responses=documented(200, "The checks", DiagnosticsResponse, read=True),
)
def get_diagnostics(
    who: Reader,
    deps: Adapters,
    probe: Probe,
    cluster_id: Annotated[str | None, Query(pattern=CLUSTER_ID)] = None,
) -> Response[str]:
    return ok(diagnostics.diagnose(deps, probe, who.tenant_id, cluster_id), who.request_id)
