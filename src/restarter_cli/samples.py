"""What a sample event names, made on the embedded AWS before `restarter invoke` delivers it.

On AWS a step event arrives for a restart the intake accepted, a cancel for a restart in
progress, a queued restart for a cluster that exists, an ended-execution event for a restart
whose execution stopped, a rollout step for a rollout that exists. A fresh embedded AWS has
none of them, so each sample would only be answered "not found". `prepare_sample` makes what
the event names (under the ids it names) the way the system itself would have made it, and
translates the deployed names it carries (state machine `RestartStateMachine-a1B2c3D4e5F6`)
into the local ones.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from unittest import mock

from restarter.adapters.stepfunctions import ExecutionStarter
from restarter.domain.models import parse_time
from restarter.domain.rollouts import RolloutSpec
from restarter.services import restart_intake
from restarter.services.rollouts import create_rollout
from restarter.wiring import get_rollout_dependencies
from restarter_local.engine import LocalAws

SAMPLE_CLUSTER = "cluster_abc123"  # the seed's cluster, first in the default fleet
SEEDED_BY = "restarter-invoke@local"
# a seeded restart in progress waits this long at most for its instances (the seed's maximum)
HANGING_RESTART_MINUTES = 60
RESTART_ID = re.compile(r"rst_[0-9a-f]{16}")


@dataclass
class SeededSample:
    """What was made for the event, and what to do once it was delivered."""

    event: Any
    cluster_ids: list[str] = field(default_factory=list)
    restart_ids: list[str] = field(default_factory=list)
    rollout_ids: list[str] = field(default_factory=list)
    after_invoke: list[Callable[[], None]] = field(default_factory=list)


class HeldExecutions:
    """An execution starter that never starts: the record stays exactly as the intake leaves
    it, waiting for the step the sample delivers (as if the state machine were about to send it)."""

    def __init__(self, real: ExecutionStarter) -> None:
        self.real = real

    def execution_arn(self, name: str) -> str:
        return self.real.execution_arn(name)

    def start(self, name: str, payload: dict[str, Any]) -> str:
        return self.real.execution_arn(name)

    def start_once(self, name: str, payload: dict[str, Any]) -> str:
        return self.real.execution_arn(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # reading an execution's status, stopping one: the real starter


def sample_start_time(event: Any) -> datetime | None:
    """A schedule firing is delivered at its scheduled time: the embedded clock starts there,
    so the firing's maintenance window is open, as it is when Scheduler delivers it."""
    if isinstance(event, dict) and isinstance(event.get("scheduled_time"), str):
        try:
            return parse_time(event["scheduled_time"])
        except ValueError:
            return None  # the handler refuses it, as on AWS
    return None


def prepare_sample(aws: LocalAws, function: str, event: Any) -> SeededSample:
    seeded = SeededSample(event=localize_arns(aws, event))
    if not isinstance(event, dict):
        return seeded
    if function == "RestartStepFunction" and isinstance(event.get("restart_id"), str):
        _seed_restart(aws, seeded, event["restart_id"], SAMPLE_CLUSTER, held=True)
    elif function == "RestartExecutionEndedFunction":
        detail = event.get("detail") or {}
        name = str(detail.get("name") or "")
        if name.startswith("rst_"):
            cluster_id = _input_field(detail.get("input"), "cluster_id") or SAMPLE_CLUSTER
            _seed_restart(aws, seeded, name.removesuffix("-cleanup"), cluster_id, held=True)
    elif function == "RolloutStepFunction" and isinstance(event.get("rollout_id"), str):
        _seed_rollout(aws, seeded, event["rollout_id"], str(event.get("cluster_id") or SAMPLE_CLUSTER))
    elif function == "QueueRestartFunction":
        for record in event.get("Records") or []:
            named = _input_field(record.get("body") if isinstance(record, dict) else None, "cluster_id")
            if named:
                _seed_cluster(aws, seeded, named)
    elif function == "ApiFunction":
        match = re.fullmatch(r"/v1/restarts/(rst_[0-9a-f]+)/cancel", str(event.get("path") or ""))
        if match:
            _seed_restart(aws, seeded, match.group(1), SAMPLE_CLUSTER, held=False)
    return seeded


def localize_arns(aws: LocalAws, event: Any) -> Any:
    """`RestartStateMachine-<suffix>` (CloudFormation's physical name) → the local state machine."""
    text = json.dumps(event)
    for logical_id in aws.template["Resources"]:
        local = f"restarter-local-{logical_id}"
        text = re.sub(rf"(:(?:stateMachine|execution):){logical_id}-[A-Za-z0-9]+\b", rf"\g<1>{local}", text)
    return json.loads(text)


def _input_field(raw: Any, name: str) -> str | None:
    try:
        value = json.loads(raw).get(name) if isinstance(raw, str) else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _seed_cluster(aws: LocalAws, seeded: SeededSample, cluster_id: str) -> None:
    """A cluster a queued message names that the fleet does not have (one small GPU node)."""
    from restarter_local.fleet import ClusterSpec, seed_cluster

    assert aws.deps is not None
    if aws.deps.clusters.get(cluster_id) is not None:
        return
    try:
        spec = ClusterSpec(id=cluster_id, name=cluster_id.removeprefix("cluster_"), instance_type="g5.xlarge")
    except ValueError:
        return  # not a valid cluster id: the function refuses the message, as on AWS
    seed_cluster(aws, spec)
    seeded.cluster_ids.append(cluster_id)


def _seed_restart(aws: LocalAws, seeded: SeededSample, restart_id: str, cluster_id: str, *, held: bool) -> None:
    """The restart the event names, accepted by the real intake under the event's id. `held`:
    its execution is not started (a step or cleanup event plays the state machine's part).
    Otherwise it runs and waits for an instance that does not pass its status checks, so a
    cancel finds it in progress; the instance recovers once the event was delivered."""
    deps = aws.deps
    assert deps is not None and deps.executions is not None
    if not RESTART_ID.fullmatch(restart_id):
        return  # not an id the intake would make: the function answers it as it is
    if deps.restarts.get(restart_id) is not None or deps.clusters.get(cluster_id) is None:
        return
    starter = cast(ExecutionStarter, HeldExecutions(deps.executions)) if held else deps.executions
    intake_deps = dataclasses.replace(deps, executions=starter)
    cluster = deps.clusters.get(cluster_id)
    assert cluster is not None
    request: dict[str, Any] = {"restart_reason": "seeded for a sample event"}
    if not held:
        request["timeout_minutes"] = HANGING_RESTART_MINUTES
        hanging = cluster.instance_ids[0]
        aws.agent.set_never_healthy(hanging)
        seeded.after_invoke.append(lambda: aws.agent.clear_never_healthy(hanging))
    with mock.patch.object(restart_intake, "new_restart_id", lambda: restart_id):
        restart_intake.accept_restart(intake_deps, cluster_id, request, trigger="cli", requested_by=SEEDED_BY)
    seeded.restart_ids.append(restart_id)
    if not held:
        _wait_until_waiting(aws, restart_id)


def _wait_until_waiting(aws: LocalAws, restart_id: str, timeout: float = 30.0) -> None:
    """Until the restart waits for its instances (past the reboot, into `starting_services`)."""
    assert aws.deps is not None
    deadline = time.monotonic() + timeout
    while True:
        stored = aws.deps.restarts.get(restart_id)
        if stored is None or stored[0].is_terminal or stored[0].progress.phase == "starting_services":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the seeded restart {restart_id} never reached starting_services")
        time.sleep(0.02)


def _seed_rollout(aws: LocalAws, seeded: SeededSample, rollout_id: str, cluster_id: str) -> None:
    """The rollout the step names, over that cluster, its execution not started: the step
    plays the Map iteration's part."""
    rollouts = get_rollout_dependencies()
    if rollouts.store.get(rollout_id) is not None or rollouts.executions is None:
        return
    held = dataclasses.replace(rollouts, executions=cast(ExecutionStarter, HeldExecutions(rollouts.executions)))
    spec = RolloutSpec.model_validate(
        {"cluster_ids": [cluster_id], "maintenance_window": {"id": "sample", "duration_minutes": 240}}
    )
    create_rollout(held, spec, requested_by=SEEDED_BY, rollout_id=rollout_id, trigger="cli")
    seeded.rollout_ids.append(rollout_id)
