"""Least privilege, measured: every AWS call each function of template.yaml makes while it runs
(its real code on the embedded AWS) is allowed by its own policies there, as IAM would decide it:
the ARN of what it touches and, for EC2 and Run Command, that resource's `restarter:cluster` tag."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote

import pytest
from moto.ec2.models import ec2_backends

from restarter_local.account import ACCOUNT, REGION
from restarter_local.engine import LocalAws
from restarter_local.moto_ext import throttling
from restarter_local.moto_ext.gpu_sim import GpuFault
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import WEEKLY, ApiClient, Seed, event
from tests.integration.test_iam_policies import Request, granted

LOCAL = "restarter-local-"
PATH = "__request_path__"  # added to the recorded parameters: REST APIs name resources in the path
Calls = dict[str, dict[tuple[Any, ...], Request]]


def _ec2_arn(resource_id: str) -> str:
    kind = {"i": "instance", "vol": "volume", "snap": "snapshot", "replacevol": "replace-root-volume-task"}
    prefix = kind[resource_id.split("-")[0]]
    account = "" if prefix == "snapshot" else ACCOUNT  # a snapshot's ARN has no account
    return f"arn:aws:ec2:{REGION}:{account}:{prefix}/{resource_id}"


def _ec2_requests(action: str, params: dict[str, Any]) -> list[Request]:
    """The authorizations an EC2 call needs (Service Authorization Reference), each resource
    with the tags it carries when the call is made."""
    backend = ec2_backends[ACCOUNT][REGION]

    def on(resource_id: str) -> Request:
        return Request(f"ec2:{action}", _ec2_arn(resource_id), dict(backend.tags.get(resource_id, {})))

    def created(kind: str) -> Request:
        """A resource the call creates: no tags yet, the tags it asks for as aws:RequestTag/*."""
        account = "" if kind == "snapshot" else ACCOUNT
        asked = [
            t for spec in params.get("TagSpecifications", []) if spec["ResourceType"] == kind for t in spec["Tags"]
        ]
        context = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in asked}
        return Request(f"ec2:{action}", f"arn:aws:ec2:{REGION}:{account}:{kind}/*", context=context)

    def tagged_at_creation(kind: str) -> list[Request]:
        if not params.get("TagSpecifications"):
            return []
        account = "" if kind == "snapshot" else ACCOUNT
        arn = f"arn:aws:ec2:{REGION}:{account}:{kind}/*"
        return [Request("ec2:CreateTags", arn, context={"ec2:CreateAction": action})]

    if action.startswith("Describe"):
        return [Request(f"ec2:{action}", "*")]
    if action in {"RebootInstances", "StopInstances", "StartInstances"}:
        return [on(i) for i in params["InstanceIds"]]
    if action == "ModifyInstanceAttribute":
        return [on(params["InstanceId"])]
    if action == "ModifyVolume":
        return [on(params["VolumeId"])]
    if action == "CreateSnapshots":
        instance_id = params["InstanceSpecification"]["InstanceId"]
        volumes = [v.id for v in backend.volumes.values() if v.attachment and v.attachment.instance.id == instance_id]
        return [on(instance_id), *map(on, volumes), created("snapshot"), *tagged_at_creation("snapshot")]
    if action == "CreateReplaceRootVolumeTask":
        needed = [on(params["InstanceId"]), created("replace-root-volume-task")]
        return needed + ([on(params["SnapshotId"])] if params.get("SnapshotId") else [])
    raise AssertionError(f"no IAM model for ec2:{action}: add what it authorizes to _ec2_requests")


def requests_for(service: str, action: str, params: dict[str, Any]) -> list[Request]:
    """What IAM authorizes for one call, resources named as the template names them: its logical
    id (`!Ref`/`!GetAtt`), or the ARN as deployed (`<X>` for the name of template resource X)."""
    prefix = "states" if service == "stepfunctions" else service
    iam_action = f"{prefix}:{action}"
    if service == "ec2":
        return _ec2_requests(action, params)
    if service == "ssm":
        if action == "SendCommand":
            document = f"arn:aws:ssm:{REGION}::document/{params['DocumentName']}"
            backend = ec2_backends[ACCOUNT][REGION]
            instances = [
                Request(iam_action, _ec2_arn(i), dict(backend.tags.get(i, {}))) for i in params.get("InstanceIds", [])
            ]
            return [Request(iam_action, document), *instances]
        if "Name" in params:
            name = str(params["Name"]).split(":")[0]  # `name:version` reads a version of the parameter
            return [Request(iam_action, f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}")]
        return [Request(iam_action, "*")]
    if service == "stepfunctions":
        if params.get("executionArn"):  # arn:...:execution:<machine>:<name>
            machine, name = params["executionArn"].split(":execution:")[1].split(":", 1)
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:<{machine.removeprefix(LOCAL)}>:{name}"
            return [Request(iam_action, arn)]
        return [Request(iam_action, str(params["stateMachineArn"]).rsplit(":", 1)[-1].removeprefix(LOCAL))]
    if service == "scheduler":  # REST: the name is the request path's last segment
        name = unquote(str(params.get(PATH, "")).rstrip("/").rsplit("/", 1)[-1])
        group = params.get("GroupName") or params.get("groupName") or "default"
        if action in {"CreateScheduleGroup", "GetScheduleGroup"}:
            return [Request(iam_action, f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule-group/{name}")]
        if action == "ListSchedules":
            return [Request(iam_action, "*")]
        schedule = Request(iam_action, f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{group}/{name}")
        if action == "CreateSchedule":
            role = str(params["Target"]["RoleArn"]).rsplit("/", 1)[-1].removeprefix(LOCAL)
            passed = Request("iam:PassRole", role, context={"iam:PassedToService": "scheduler.amazonaws.com"})
            return [schedule, passed]
        return [schedule]
    if service == "cloudwatch":
        return [Request(iam_action, str(params["ResourceARN"]))]
    if service == "events":
        bus = str(params["Entries"][0].get("EventBusName") if "Entries" in params else params.get("Name"))
        bus = str(params.get("EventBusName") or bus if bus != "None" else "default").rsplit("/", 1)[-1]
        arn = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
        return [Request(iam_action, "RestarterEventBus" if bus == "restarter-local" else arn)]
    if service == "iam" and action == "SimulatePrincipalPolicy":
        role = str(params["PolicySourceArn"])
        local = role.rsplit("/", 1)[-1]
        return [Request(iam_action, local.removeprefix(LOCAL) if local.startswith(LOCAL) else role)]
    if service == "sqs":
        return [Request(iam_action, _queue(str(params["QueueUrl"]).rsplit("/", 1)[-1]))]
    if service == "dynamodb":
        tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
        return [Request(iam_action, str(t).removeprefix(LOCAL)) for t in tables]
    raise AssertionError(f"no IAM model for {iam_action}: add what it authorizes to requests_for")


def _queue(name: str) -> str:
    """The template queue: by its local name, or as deployed (the sample events' queue ARNs)."""
    if name.startswith(LOCAL):
        return name.removeprefix(LOCAL)
    for logical_id, resource in load_template()["Resources"].items():
        pattern = resource["Properties"].get("QueueName") if resource["Type"] == "AWS::SQS::Queue" else None
        if isinstance(pattern, dict) and name.endswith(str(pattern["Fn::Sub"]).rsplit("}", 1)[-1]):
            return str(logical_id)
    raise AssertionError(f"queue {name} is not one of the template's")


@pytest.fixture
def calls_by_function(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every authorization the calls of a function's code needed while it ran (its Lambda
    invocations, on the thread that runs each), by function."""
    calls: Calls = {}
    current = threading.local()
    invoke, record_call, request_params = aws.registry.invoke, aws.agent.record_call, throttling._request_params

    def with_path(response: Any) -> dict[str, Any]:
        return {**request_params(response), PATH: getattr(response, "path", "")}

    def invoking(function_name: str, payload: Any) -> tuple[Any, bool]:
        outer = getattr(current, "name", None)
        current.name = function_name.split(":function:")[-1].split(":")[0]
        try:
            result, errored = invoke(function_name, payload)
            return result, bool(errored)
        finally:
            current.name = outer

    def recording(service: str, action: str, params: dict[str, Any] | None = None) -> Any:
        params = dict(params or {})
        path = params.pop(PATH, "")
        name = getattr(current, "name", None)
        if name:
            try:
                needed = requests_for(service, action, {**params, PATH: path})
            except (AssertionError, KeyError) as exc:  # unmodelled: refused, with what it was called with
                needed = [Request(f"unmodelled {service}:{action} ({exc!r})", json.dumps(params, default=str))]
            for request in needed:
                calls.setdefault(name, {})[request.key()] = request
        return record_call(service, action, params)

    monkeypatch.setattr(aws.registry, "invoke", invoking)
    monkeypatch.setattr(aws.agent, "record_call", recording)
    monkeypatch.setattr(throttling, "_request_params", with_path)
    return calls


def refused(calls: Calls, functions: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    template = load_template()
    assert set(functions) <= set(calls), f"functions that made no call: {sorted(set(functions) - set(calls))}"
    return {f: sorted(k for k, r in calls[f].items() if not granted(template, f, r)) for f in functions}


def actions(calls: Calls, function: str) -> set[str]:
    return {request.action for request in calls.get(function, {}).values()}


def settle(aws: LocalAws, timeout: float = 60) -> None:
    """No execution runs and no ended execution is still being handled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        aws.wait_for_rollouts()
        if not aws.execution_events_pending and all(e["status"] != "RUNNING" for e in aws.executions()):
            return
        time.sleep(0.05)
    raise AssertionError("the executions did not settle")


def start(aws: LocalAws, cluster_id: str, request: dict[str, Any]) -> dict[str, Any]:
    payload = {"cluster_id": cluster_id, "requested_by": "ops@example.com", "trigger": "cli", "request": request}
    result, errored = aws.registry.invoke("StartRestartFunction", payload)
    assert not errored and result["success"], result
    return dict(result["data"])


# ---------------------------------------------------------------- the functions, each through its paths


def test_given_the_trigger_functions_when_they_run_then_their_template_policies_allow_every_call_they_make(
    api: ApiClient, seed: Seed, aws: LocalAws, calls_by_function: Calls
) -> None:
    """ScheduledRolloutFunction once lacked AuditTable although create_rollout audits: each
    trigger function runs its real code here, and every call it made must be allowed."""
    seed(labels={"team": "ml"})  # cluster_abc123
    api.call("POST", "/v1/schedules", WEEKLY)

    # When each trigger delivers its sample events (and the rollouts run their items)
    aws.fire_schedule("weekly-ml-maintenance", "restarter-default")
    aws.wait_for_rollouts()
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_rollout.json"))
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_restart_batch.json"))
    aws.wait_for_rollouts()
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_cluster_dimension.json"))
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_instance.json"))  # by tag
    settle(aws)

    # Then each made its calls, and template.yaml allows every one of them
    triggers = ("ScheduledRolloutFunction", "QueueRestartFunction", "AlarmRecoveryFunction", "RolloutStepFunction")
    assert ("dynamodb:PutItem", "AuditTable", (), ()) in calls_by_function["ScheduledRolloutFunction"]
    assert "cloudwatch:ListTagsForResource" in actions(calls_by_function, "AlarmRecoveryFunction")
    assert refused(calls_by_function, triggers) == {f: [] for f in triggers}


def test_given_restarts_that_change_everything_and_one_that_fails_when_run_then_every_call_is_allowed(
    seed: Seed, aws: LocalAws, calls_by_function: Calls
) -> None:
    # Given a cluster; a checkpointed restart that resizes, grows, patches and swaps the image
    cluster = seed(instance_type="g5.xlarge")
    first = start(
        aws,
        cluster.id,
        {
            "preserve_state": True,
            "apply_system_updates": True,
            "update_configuration": {"cpu_cores": 16, "storage_gb": 2000},
            "update_docker_image": "tensorone/pytorch:2.2-cuda12.1",
            "environment_updates": {"MODEL_VERSION": "v2.0"},
        },
    )
    settle(aws)
    assert aws.deps is not None
    done = aws.deps.restarts.get(first["id"])
    assert done is not None and done[0].status == "ready", done
    checkpoint = aws.deps.clusters.get(cluster.id).snapshots[0].id  # type: ignore[union-attr]

    # When a restore from that checkpoint runs, then one whose services fail to start (rolled back)
    start(aws, cluster.id, {"force": True, "restore_from_snapshot": checkpoint})
    settle(aws)
    aws.agent.fail_command(cluster.instance_ids[0], "start_services", stderr="docker: Error", times=3)
    failing = start(
        aws, cluster.id, {"update_docker_image": "tensorone/pytorch:9.9", "environment_updates": {"A": "b"}}
    )
    settle(aws)

    # Then the step function did all of it, and the template allows every call
    rolled_back = aws.deps.restarts.get(failing["id"])
    assert rolled_back is not None and rolled_back[0].status == "rolled_back", rolled_back
    step = actions(calls_by_function, "RestartStepFunction")
    assert {
        "ec2:CreateSnapshots",
        "ec2:CreateTags",
        "ec2:ModifyInstanceAttribute",
        "ec2:ModifyVolume",
        "ec2:CreateReplaceRootVolumeTask",
        "ec2:StopInstances",
        "ec2:StartInstances",
        "ssm:SendCommand",
        "ssm:GetCommandInvocation",
        "ssm:PutParameter",
    } <= step, sorted(step)
    functions = ("StartRestartFunction", "RestartStepFunction")
    assert refused(calls_by_function, functions) == {f: [] for f in functions}


def _cluster_alarm(cluster_id: str) -> dict[str, Any]:
    sample = event("alarm_state_change_cluster_dimension.json", event_id=str(uuid.uuid4()))
    return dict(json.loads(json.dumps(sample).replace("cluster_abc123", cluster_id)))


def _health_check(api: ApiClient, cluster_id: str) -> None:
    assert api.call("POST", f"/v1/clusters/{cluster_id}/health-check").status == 202
    for _ in range(200):
        if api.call("GET", f"/v1/clusters/{cluster_id}/health", key="reader").json()["data"]["pending_check"] is None:
            return
        time.sleep(0.05)
    raise AssertionError("the health check did not finish")


def test_given_a_failing_ladder_rung_when_its_execution_ends_then_the_next_rungs_calls_are_allowed(
    api: ApiClient, seed: Seed, aws: LocalAws, calls_by_function: Calls
) -> None:
    # Given Xid 79 (the reboot does not bring the GPU back), seen by a health check
    cluster = seed(instance_count=1)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=3, xid=79))
    _health_check(api, cluster.id)

    # When the alarm fires: the reboot rung fails and its ended execution starts stop/start
    result, errored = aws.registry.invoke("AlarmRecoveryFunction", _cluster_alarm(cluster.id))
    assert not errored and result["data"]["rung"] == "reboot", result
    settle(aws)

    # Then RestartExecutionEndedFunction continued the ladder, and every call was allowed
    assert "states:StartExecution" in actions(calls_by_function, "RestartExecutionEndedFunction")
    assert "ec2:StopInstances" in actions(calls_by_function, "RestartStepFunction")
    functions = ("AlarmRecoveryFunction", "RestartExecutionEndedFunction", "RestartStepFunction", "ApiFunction")
    assert refused(calls_by_function, functions) == {f: [] for f in functions}


def test_given_every_route_of_the_api_when_called_then_the_api_and_authorizer_calls_are_allowed(
    api: ApiClient, seed: Seed, aws: LocalAws, calls_by_function: Calls
) -> None:
    # Given two clusters of the ml team; one restart that hangs (its first instance never passes checks)
    cluster = seed(labels={"team": "ml"})
    seed(id="cluster_b", name="ml-b", instance_count=1, labels={"team": "ml"})
    aws.agent.set_never_healthy(cluster.instance_ids[0])

    # When every route is called
    answers = {
        "list clusters": api.call("GET", "/v1/clusters"),
        "get cluster": api.call("GET", f"/v1/clusters/{cluster.id}"),
        "restart": api.call("POST", f"/v1/clusters/{cluster.id}/restart", {"restart_reason": "permissions"}),
    }
    restart_id = answers["restart"].json()["data"]["restart_id"]
    answers["get restart"] = api.call("GET", f"/v1/restarts/{restart_id}")
    answers["cluster restarts"] = api.call("GET", f"/v1/clusters/{cluster.id}/restarts")
    answers["cancel"] = api.call("POST", f"/v1/restarts/{restart_id}/cancel")
    settle(aws)
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    _health_check(api, "cluster_b")
    answers["health"] = api.call("GET", "/v1/clusters/cluster_b/health")
    answers["circuit"] = api.call("GET", "/v1/recovery/circuit")
    answers["close circuit"] = api.call("POST", "/v1/recovery/circuit/close")
    rollout = {"maintenance_window": {"id": "mw-permissions"}, "labels": {"team": "ml"}, "request": {}}
    answers["rollout"] = api.call("POST", "/v1/rollouts", rollout)
    rollout_link = answers["rollout"].json()["data"]["links"]["self"]
    settle(aws)
    answers["get rollout"] = api.call("GET", rollout_link)
    answers["resume rollout"] = api.call("POST", f"{rollout_link}/resume")
    answers["schedule"] = api.call("POST", "/v1/schedules", WEEKLY)
    answers["schedules"] = api.call("GET", "/v1/schedules")
    answers["get schedule"] = api.call("GET", f"/v1/schedules/{WEEKLY['name']}")
    answers["delete schedule"] = api.call("DELETE", f"/v1/schedules/{WEEKLY['name']}")
    answers["diagnostics"] = api.call("GET", "/v1/diagnostics")
    answers["cluster diagnostics"] = api.call("GET", "/v1/diagnostics", query={"cluster_id": [cluster.id]})
    answers["bad key"] = api.call("GET", "/v1/clusters", key="rk_unknown_key")
    settle(aws)

    # Then each route answered (a refused resume of a finished rollout is an answer too), and
    # every call was allowed
    statuses = {name: answer.status for name, answer in answers.items()}
    assert all(s < 500 for s in statuses.values()) and statuses["bad key"] in {401, 403}, statuses
    assert statuses["cancel"] == 202, answers["cancel"].body
    assert statuses["schedule"] == 201 and statuses["delete schedule"] in {200, 204}
    api_calls = actions(calls_by_function, "ApiFunction")
    assert {"ssm:SendCommand", "states:StartExecution", "scheduler:CreateSchedule", "iam:PassRole"} <= api_calls, (
        sorted(api_calls)
    )
    assert {"dynamodb:DescribeTable", "events:ListRules", "ssm:DescribeInstanceInformation"} <= api_calls  # diagnostics
    assert "dynamodb:GetItem" in actions(calls_by_function, "ApiKeyAuthorizerFunction")
    functions = ("ApiFunction", "ApiKeyAuthorizerFunction", "RestartStepFunction", "RolloutStepFunction")
    assert refused(calls_by_function, functions) == {f: [] for f in functions}


def test_every_function_of_the_template_is_exercised_by_these_tests() -> None:
    """A new function gets its scenario here, or its policies go unmeasured."""
    exercised = {
        "StartRestartFunction",
        "RestartStepFunction",
        "RestartExecutionEndedFunction",
        "ApiFunction",
        "ApiKeyAuthorizerFunction",
        "QueueRestartFunction",
        "AlarmRecoveryFunction",
        "RolloutStepFunction",
        "ScheduledRolloutFunction",
    }
    functions = {k for k, r in load_template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == exercised
