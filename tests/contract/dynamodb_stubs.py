"""Stubbed DynamoDB clients and realistic items shared by the contract tests of the stores:
requests checked against the real model (and the limits botocore leaves to the service)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.model import Shape
from botocore.stub import Stubber

from restarter.domain.auth import Principal, hash_key
from restarter.domain.circuit_breaker import BreakerState
from restarter.domain.gpu.records import NodeHealthRecord, PendingHealthCheck
from restarter.domain.models import Cluster, ContainerSpec, RestartProgress, RestartRecord, RestartTarget
from restarter.domain.recovery import RecoveryEntry
from restarter.domain.rollouts import ItemResult, MaintenanceWindow, RolloutRecord, RolloutSpec

REGION = "us-east-1"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STAMP = "2026-01-05T09:00:00Z"
SINCE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # the start of a history read
DAY = 86400
Call = tuple[str, dict[str, Any], dict[str, Any]]  # (client method, exact request, answer)


# ---------------------------------------------------------------- shared helpers


def model_limit_violations(shape: Shape, value: Any, path: str = "") -> list[str]:
    """What the real service refuses but botocore's validator lets through: maximum lengths and
    values, enums, patterns (botocore checks types, required members and minimums only)."""
    problems: list[str] = []
    meta, kind = shape.metadata, shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            if name in value:
                problems += model_limit_violations(member, value[name], f"{path}.{name}")
    elif kind == "list" and isinstance(value, list):
        if len(value) > meta.get("max", len(value)):
            problems.append(f"{path}: {len(value)} items, at most {meta['max']}")
        for i, element in enumerate(value):
            problems += model_limit_violations(shape.member, element, f"{path}[{i}]")  # type: ignore[attr-defined]
    elif kind == "map" and isinstance(value, dict):
        for key, element in value.items():
            problems += model_limit_violations(shape.key, key, f"{path}<key>")  # type: ignore[attr-defined]
            problems += model_limit_violations(shape.value, element, f"{path}[{key}]")  # type: ignore[attr-defined]
    elif kind == "string" and isinstance(value, str):
        if len(value) > meta.get("max", len(value)):
            problems.append(f"{path}: {len(value)} characters, at most {meta['max']}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not one of {shape.enum}")
        if "pattern" in meta and not _matches(meta["pattern"], value):
            problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
    elif kind in ("integer", "long") and isinstance(value, int) and value > meta.get("max", value):
        problems.append(f"{path}: {value} above {meta['max']}")
    return problems


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value, re.DOTALL) is not None
    except re.error:  # a Java-only construct (\p{...}): nothing to check offline
        return True


def _check_limits(params: dict[str, Any], model: Any, **_: Any) -> None:
    problems = model_limit_violations(model.input_shape, params) if model.input_shape else []
    assert not problems, f"{model.name} refused by the {model.service_model.service_name} model: {problems}"


def stub_clients() -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    """Body of each module's `stubbed` fixture: `stubbed("dynamodb")` is a real client (fake
    credentials, never sending) with its Stubber active and every request limit-checked."""
    stubbers: list[Stubber] = []

    def make(service: str) -> tuple[Any, Stubber]:
        client = boto3.client(service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        client.meta.events.register("before-parameter-build.*.*", _check_limits)
        stubber = Stubber(client)
        stubber.activate()
        stubbers.append(stubber)
        return client, stubber

    yield make
    for stubber in stubbers:
        stubber.deactivate()


class Matching:
    """Equal to any string the regular expression matches whole: for generated values whose
    shape is the contract (a time with a random suffix, a hashed key)."""

    def __init__(self, pattern: str) -> None:
        self._pattern = re.compile(pattern)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self._pattern.fullmatch(other) is not None

    def __hash__(self) -> int:
        return hash(self._pattern.pattern)

    def __repr__(self) -> str:
        return f"Matching({self._pattern.pattern!r})"


def page(*items: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"Items": list(items), "Count": len(items), "ScannedCount": len(items), **more}


def get_item(table: str, key: dict[str, Any], item: dict[str, Any] | None, consistent: bool = True) -> Call:
    request = {"TableName": table, "Key": key, **({"ConsistentRead": True} if consistent else {})}
    return "get_item", request, ({"Item": item} if item else {})


def put_item(table: str, item: dict[str, Any], **condition: Any) -> Call:
    return "put_item", {"TableName": table, "Item": item, **condition}, {}


def add_error(
    client: Any, stubber: Stubber, call: Call | str, code: str, *, declared: bool = True, **modeled: Any
) -> None:
    """Queue `code` as the answer, after checking the operation really declares it (`declared=False`:
    a code the service sends without modelling it, such as Step Functions' ThrottlingException)."""
    method, request = (call, None) if isinstance(call, str) else call[:2]
    operation = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[method])
    codes = {shape.name for shape in operation.error_shapes}
    codes |= {shape.metadata.get("error", {}).get("code", shape.name) for shape in operation.error_shapes}
    assert not declared or code in codes, f"{operation.name} never answers {code}: {sorted(codes)}"
    message = "The conditional request failed" if code == "ConditionalCheckFailedException" else code
    stubber.add_client_error(method, code, message, 400, expected_params=request, modeled_fields=modeled or None)


# ---------------------------------------------------------------- records (shared)

CLUSTER = Cluster(
    id="cls_a1",
    name="train-a1",
    tenant_id="t1",
    region=REGION,
    instance_ids=["i-0123456789abcdef0"],
    instance_type="p4d.24xlarge",
    gpu_type="A100",
    gpu_count=8,
    container=ContainerSpec(image="nvcr.io/nvidia/pytorch:24.01-py3"),
)


def restart_record(restart_id: str = "rst_0a1b2c", status: str = "restarting") -> RestartRecord:
    progress = RestartProgress(
        phase="validating", percentage=0, current_step="Validating", steps_completed=0, total_steps=4
    )
    return RestartRecord.model_validate(
        {
            **{"id": restart_id, "cluster_id": "cls_a1", "cluster_name": "train-a1", "tenant_id": "t1"},
            **{"restart_type": "graceful", "trigger": "api", "requested_by": "key:0a1b2c3d", "status": status},
            **{"request": {"restart_type": "graceful"}, "plan": ["validating", "rebooting", "ready"]},
            **{"target": RestartTarget(), "restart_initiated_at": STAMP, "progress": progress},
            **{"estimated_completion_time": "2026-01-05T09:10:00Z", "deadline": "2026-01-05T10:00:00Z"},
        }
    )


def restart_item(record: RestartRecord, version: int) -> dict[str, Any]:
    index = {"cluster_id": record.cluster_id, "restart_initiated_at": record.restart_initiated_at}
    return {
        "restart_id": {"S": record.id},
        **{name: {"S": value} for name, value in index.items()},
        "status": {"S": record.status},
        "version": {"N": str(version)},
        "body": {"S": record.model_dump_json()},
    }


def rollout_record(status: str = "running") -> RolloutRecord:
    spec = RolloutSpec(cluster_ids=["cls_a1"], maintenance_window=MaintenanceWindow(id="w1", duration_minutes=60))
    results = [ItemResult(cluster_id="cls_a1", name="train-a1")]
    fields = {"rollout_id": "rol_0a1b2c", "requested_by": "key:0a1b2c3d", "created_at": STAMP}
    return RolloutRecord.model_validate({**fields, "spec": spec, "status": status, "results": results})


def rollout_item(record: RolloutRecord, version: int) -> dict[str, Any]:
    body = {"S": record.model_dump_json()}
    return {
        "rollout_id": {"S": record.rollout_id},
        "status": {"S": record.status},
        "version": {"N": str(version)},
        "body": body,
    }


ENTRY = RecoveryEntry.model_validate(
    {"cluster_id": "cls_a1", "recovered_at": STAMP, "alarm_name": "gpu-xid-cls_a1", "strategy": "restart"}
    | {"restart_id": "rst_0a1b2c", "event_id": "evt-1"}
)
BREAKER = BreakerState(tenant_id="t1", state="open", opened_at=STAMP, recovering_clusters=["cls_a1"], limit=1)
INSTANCE = "i-0123456789abcdef0"
REPORT = NodeHealthRecord(cluster_id="cls_a1", instance_id=INSTANCE, taken_at=STAMP, source="health_check")
PENDING = PendingHealthCheck.model_validate(
    {"cluster_id": "cls_a1", "check_id": "chk_1", "command_id": "0b1f5d2e-7c3a-4f7e-9d51-3b6f2a8c9e10"}
    | {"instance_ids": [INSTANCE], "requested_by": "key:0a1b2c3d", "started_at": STAMP, "expected_gpus": 8}
)
API_KEY = "rk_0a1b2c3d_Zq7xWv3Kd9LmPn2Rt5Yb8Hc4Fg6Js1Qa0Ue-Io_Xw"
KEY_HASH = hash_key(API_KEY)
PRINCIPAL = Principal(key_id="0a1b2c3d", tenant_id="t1", scopes=frozenset({"read", "restart"}), name="ci")
KEY_ITEM = {
    **{"key_hash": {"S": KEY_HASH}, "key_id": {"S": "0a1b2c3d"}, "tenant_id": {"S": "t1"}},
    **{"scopes": {"SS": ["read", "restart"]}, "created_at": {"S": STAMP}, "disabled": {"BOOL": False}},
    "name": {"S": "ci"},
}
KEY_SCAN = {
    "TableName": "ApiKeys",
    "FilterExpression": "key_id = :k",
    "ProjectionExpression": "key_hash",
    "ExpressionAttributeValues": {":k": {"S": "0a1b2c3d"}},
}
RESTART_KEY = {"restart_id": {"S": "rst_0a1b2c"}}
ROLLOUT_KEY = {"rollout_id": {"S": "rol_0a1b2c"}}
LOCK_KEY = {"lock_id": {"S": "cluster#cls_a1"}}
CLAIM_KEY = {"cluster_id": {"S": "event#evt-1"}, "recovered_at": {"S": "claimed"}}
BREAKER_KEY = {"cluster_id": {"S": "breaker#t1"}, "recovered_at": {"S": "state"}}
CHECK_KEY = {"cluster_id": {"S": "cls_a1"}, "instance_id": {"S": "#check"}}
REPORT_KEY = {"cluster_id": {"S": "cls_a1"}, "instance_id": {"S": INSTANCE}}
MONTH_ON = {"N": str(int(NOW.timestamp()) + 30 * DAY)}
REPORT_ITEM = {**REPORT_KEY, "report": {"S": REPORT.model_dump_json(exclude_none=True)}, "expires_at_epoch": MONTH_ON}
CHECK_ITEM = {
    **CHECK_KEY,
    "check_id": {"S": "chk_1"},
    "check": {"S": PENDING.model_dump_json()},
    "expires_at_epoch": MONTH_ON,
}
HISTORY_ITEM = {
    **{"cluster_id": {"S": "cls_a1"}, "recovered_at": {"S": f"{STAMP}#evt-1"}, "alarm_name": {"S": "gpu-xid-cls_a1"}},
    **{"strategy": {"S": "restart"}, "restart_id": {"S": "rst_0a1b2c"}, "event_id": {"S": "evt-1"}},
    **{"body": {"S": ENTRY.model_dump_json()}, "expires_at_epoch": MONTH_ON},
}


def breaker_item(version: int) -> dict[str, Any]:
    body = {"S": BREAKER.model_copy(update={"version": version}).model_dump_json()}
    attributes = {"version": {"N": str(version)}, "tenant_id": {"S": "t1"}, "breaker_state": {"S": "open"}}
    return {**BREAKER_KEY, "state": body, **attributes}


def set_ready(record: Any) -> None:
    record.status = "ready" if isinstance(record, RestartRecord) else "completed"


def versioned(expected: int) -> dict[str, Any]:
    return {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(expected)}}}
