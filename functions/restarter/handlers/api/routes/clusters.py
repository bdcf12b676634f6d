"""GET a cluster and list the tenant's clusters."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from restarter.handlers.api.depends import Adapters, Reader
from restarter.handlers.api.envelopes import ok
from restarter.handlers.api.models import API_PREFIX, ClusterListResponse, ClusterResponse, cluster_view
from restarter.handlers.api.openapi import documented
from restarter.handlers.api.parameters import CLUSTER_ID
from restarter.handlers.api.route_table import DeclaredRouter
from restarter.services import restart_api

router = DeclaredRouter()


@router.get(
    f"{API_PREFIX}/clusters/<cluster_id>",
    summary="Get a cluster",
    tags=["Clusters"],
    responses=documented(200, "The cluster", ClusterResponse, read=True),
)
def get_cluster(cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)], who: Reader, deps: Adapters) -> Response[str]:
    details = restart_api.get_cluster(deps, who.tenant_id, cluster_id)
    return ok(cluster_view(details.cluster, details.instances, details.current_restart), who.request_id)


@router.get(
    f"{API_PREFIX}/clusters",
    summary="List clusters",
    tags=["Clusters"],
    responses=documented(200, "Clusters", ClusterListResponse, read=True),
)
def list_clusters(
    who: Reader,
    deps: Adapters,
    status: Annotated[str | None, Query(pattern=r"^(running|stopped|error|starting|stopping|restarting)$")] = None,
    label: Annotated[str | None, Query(max_length=256, description="`key=value` or `key`")] = None,
) -> Response[str]:
    listed = restart_api.list_clusters(deps, who.tenant_id, status=status, label=label)
    views = [cluster_view(c.cluster, c.instances, c.current_restart).model_dump(mode="json") for c in listed]
    return ok(views, who.request_id)
