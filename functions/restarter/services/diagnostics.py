"""What a first restart needs from the account, checked before it fails halfway:
`GET /v1/diagnostics[?cluster_id=...]` and `restarter doctor`.

The stack's own resources (tables, the event bus, the rules that route alarms and ended
executions), then for a cluster: every instance exists, carries the cluster tag (the IAM
conditions refuse to reboot, stop or run commands on an untagged instance), is managed by SSM
and online, has GPUs, and the restart's role is allowed the calls a restart makes on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from restarter.adapters.account_probe import AccountProbe
from restarter.domain.errors import RestarterError
from restarter.domain.models import Cluster
from restarter.services.restart_api import visible_cluster
from restarter.wiring import Dependencies

Status = Literal["ok", "missing", "warning", "unknown"]
TABLE_SETTINGS = (
    "clusters_table",
    "restarts_table",
    "locks_table",
    "audit_table",
    "api_keys_table",
    "idempotency_table",
    "rollouts_table",
    "recovery_table",
    "health_table",
)
# SAM names an event source's rule <stack>-<FunctionLogicalId><EventName>-<suffix>
ROUTED_FUNCTIONS = ("RestartExecutionEndedFunction", "AlarmRecoveryFunction")
# what a restart does on an instance, with the cluster tag as the condition sees it
RESTART_ACTIONS = ("ec2:RebootInstances", "ec2:StopInstances", "ec2:StartInstances", "ssm:SendCommand")
RUN_SHELL_SCRIPT = "arn:aws:ssm:{region}::document/AWS-RunShellScript"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def diagnose(deps: Dependencies, probe: AccountProbe, tenant_id: str, cluster_id: str | None) -> dict[str, Any]:
    checks = stack_checks(deps, probe)
    if cluster_id is not None:
        checks += cluster_checks(deps, probe, visible_cluster(deps, tenant_id, cluster_id))
    counts = {
        status: sum(1 for c in checks if c.status == status) for status in ("ok", "missing", "warning", "unknown")
    }
    return {"cluster_id": cluster_id, "checks": [asdict(c) for c in checks], "summary": counts}


def stack_checks(deps: Dependencies, probe: AccountProbe) -> list[Check]:
    settings = deps.settings
    checks = []
    for field in TABLE_SETTINGS:
        name = getattr(settings, field)
        status = probe.table_status(name)
        checks.append(
            Check(
                f"table {name}",
                "ok" if status == "ACTIVE" else "missing" if status is None else "warning",
                status or "does not exist",
            )
        )
    bus = settings.event_bus_name
    checks.append(Check(f"event bus {bus}", "ok" if probe.event_bus_exists(bus) else "missing", "restarter's events"))
    rules = probe.rule_names("default")
    for function in ROUTED_FUNCTIONS:
        found = [r for r in rules if function in r]
        checks.append(
            Check(
                f"rule to {function}",
                "ok" if found else "warning",
                ", ".join(found) if found else "no rule on the default bus names it (deployed under another name?)",
            )
        )
    return checks


def cluster_checks(deps: Dependencies, probe: AccountProbe, cluster: Cluster) -> list[Check]:
    tag_key = deps.settings.cluster_tag_key
    found = {v.instance_id: v for v in _instances(deps, cluster)}
    online = deps.provider.agents_online(cluster.instance_ids) if found else {}
    checks = []
    for iid in cluster.instance_ids:
        view = found.get(iid)
        if view is None:
            checks.append(Check(f"instance {iid}", "missing", "not found in EC2 (terminated, or another region)"))
            continue
        checks.append(Check(f"instance {iid}", "ok", f"{view.instance_type}, {view.state}"))
        tagged = view.tags.get(tag_key) == cluster.id
        checks.append(
            Check(
                f"tag {tag_key} on {iid}",
                "ok" if tagged else "missing",
                f"= {cluster.id}"
                if tagged
                else f"tag it {tag_key}={cluster.id}: untagged instances cannot be restarted",
            )
        )
        checks.append(
            Check(
                f"SSM agent on {iid}",
                "ok" if online.get(iid) else "missing",
                "online" if online.get(iid) else "not managed by SSM or offline: health checks and commands need it",
            )
        )
    info = deps.provider.describe_instance_type(cluster.instance_type)
    checks.append(
        Check(
            f"GPUs of {cluster.instance_type}",
            "ok" if info.gpu_count else "warning",
            f"{info.gpu_count} x {info.gpu_name}" if info.gpu_count else "the type has no GPU",
        )
    )
    checks.append(_permission_check(deps, probe, cluster, [iid for iid in cluster.instance_ids if iid in found]))
    return checks


def _instances(deps: Dependencies, cluster: Cluster) -> list[Any]:
    try:
        return list(deps.provider.describe_instances(cluster.instance_ids))
    except RestarterError:  # one unknown id fails the whole call: look one by one
        views = []
        for iid in cluster.instance_ids:
            try:
                views += deps.provider.describe_instances([iid])
            except RestarterError:
                continue
        return views


def _permission_check(deps: Dependencies, probe: AccountProbe, cluster: Cluster, instance_ids: list[str]) -> Check:
    role = deps.settings.restart_step_role_arn
    name = "restart role may reboot, stop, start and run commands"
    if not role or not instance_ids:
        return Check(name, "unknown", "RESTART_STEP_ROLE_ARN is not set" if not role else "no instance to check")
    account = role.split(":")[4]
    region = deps.settings.region
    resources = [f"arn:aws:ec2:{region}:{account}:instance/{iid}" for iid in instance_ids]
    decisions = probe.simulate(
        role,
        list(RESTART_ACTIONS),
        [*resources, RUN_SHELL_SCRIPT.format(region=region)],
        {f"aws:ResourceTag/{deps.settings.cluster_tag_key}": cluster.id},
    )
    if decisions is None:
        return Check(name, "unknown", "iam:SimulatePrincipalPolicy did not answer (not allowed, or not available)")
    denied = sorted(a for a, d in decisions.items() if d != "allowed")
    return Check(name, "missing" if denied else "ok", f"denied: {', '.join(denied)}" if denied else "allowed")
