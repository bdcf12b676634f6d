"""SSM extensions: realistic SendCommand results, ListCommandInvocations, DescribeInstanceInformation."""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ssm.exceptions import InvalidFilterKey, SSMException
from moto.ssm.models import Command, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse

from . import _runtime, agent
from .registry import adds, wraps
from .state import SimulatedAgentState

AGENT_VERSION = "3.3.1611.0"
# ListCommandInvocations truncates each plugin's Output to 2,500 characters;
# GetCommandInvocation's StandardOutputContent/StandardErrorContent to 24,000.
LIST_OUTPUT_LIMIT = 2500
GET_OUTPUT_LIMIT = 24000
_Action = Callable[[SimpleSystemManagerResponse], ActionResult]
_DTO_ATTR = "_restarter_delivery_timed_out_count"


class InvalidInstanceId(SSMException):
    def __init__(self, instance_ids: list[str], account_id: str) -> None:
        super().__init__(
            "InvalidInstanceId",
            f"Instances [[{', '.join(instance_ids)}]] not in a valid state for account {account_id}",
        )


def _ec2(backend: SimpleSystemManagerBackend) -> Any:
    return ec2_backends[backend.account_id][backend.region_name]


def _find_instance(ec2_backend: Any, instance_id: str) -> Any:
    try:
        return ec2_backend.get_instance(instance_id)
    except Exception:
        return None


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat()


def _apply(state: SimulatedAgentState, backend: SimpleSystemManagerBackend, command: Command) -> None:
    """Rewrite the command's invocations with what each instance's simulated agent answers."""
    ec2_backend = _ec2(backend)
    document_name = command.document_name or ""
    failed = delivery_timed_out = 0
    for invocation in command.invocations:
        instance = _find_instance(ec2_backend, invocation["InstanceId"])
        outcome = agent.answer(state, ec2_backend, instance, document_name, command.parameters)
        start = command.requested_date_time
        end = start + datetime.timedelta(seconds=outcome.elapsed_seconds)
        invocation.update(
            {
                "PluginName": outcome.plugin_name,
                "DocumentVersion": "$DEFAULT",
                "Status": outcome.status,
                "StatusDetails": outcome.status_details,
                "ResponseCode": outcome.response_code,
                "StandardOutputContent": outcome.stdout[:GET_OUTPUT_LIMIT],
                "StandardErrorContent": outcome.stderr[:GET_OUTPUT_LIMIT],
                "ExecutionStartDateTime": _iso(start) if outcome.delivered else "",
                "ExecutionElapsedTime": f"PT{outcome.elapsed_seconds:.3f}S",
                "ExecutionEndDateTime": _iso(end) if outcome.delivered else "",
            }
        )
        if not outcome.delivered:
            delivery_timed_out += 1
        elif outcome.failed:
            failed += 1
        state.log_command(agent.log_entry(command.command_id, invocation["InstanceId"], document_name, outcome))
    command.target_count = len(command.invocations)
    command.completed_count = len(command.invocations)
    command.error_count = failed
    setattr(command, _DTO_ATTR, delivery_timed_out)
    command.status = "Failed" if failed or delivery_timed_out else "Success"
    command.status_details = command.status


def _wrap_send_command(original: Callable[..., Command]) -> Callable[..., Command]:
    signature = inspect.signature(original)

    def send_command(self: SimpleSystemManagerBackend, *args: Any, **kwargs: Any) -> Command:
        state = _runtime.active_state()
        if state is None:
            return original(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        ec2_backend = _ec2(self)
        invalid = [
            instance_id
            for instance_id in bound.arguments.get("instance_ids") or []
            if getattr(_find_instance(ec2_backend, instance_id), "state", None) != "running"
        ]
        if invalid:
            raise InvalidInstanceId(invalid, self.account_id)
        # copied first: moto's Command extends the list it is given in place
        requested = list(dict.fromkeys(bound.arguments.get("instance_ids") or []))
        command = original(self, *args, **kwargs)
        if requested and not bound.arguments.get("targets"):
            # moto adds every instance of the region when no Targets are given (it resolves the
            # empty target list as "no filter"): a command to one cluster reached all of them.
            by_instance = {invocation["InstanceId"]: invocation for invocation in command.invocations}
            command.instance_ids = requested
            command.invocations = [by_instance[i] for i in requested if i in by_instance]
        _apply(state, self, command)
        return command

    return send_command


def _wrap_response_object(original: Callable[[Command], dict[str, Any]]) -> Callable[[Command], dict[str, Any]]:
    def response_object(self: Command) -> dict[str, Any]:
        result = original(self)
        result["DeliveryTimedOutCount"] = getattr(self, _DTO_ATTR, 0)
        # the output shape: a region of 3+ characters, no empty bucket or prefix (moto gives "")
        result["OutputS3Region"] = result.get("OutputS3Region") or self.backend_region
        for key in ("OutputS3BucketName", "OutputS3KeyPrefix"):
            if not result.get(key):
                result.pop(key, None)
        return result

    return response_object


def _wrap_send_command_action(original: _Action) -> _Action:
    def send_command_action(self: SimpleSystemManagerResponse) -> ActionResult:
        # Real SendCommand answers before any agent ran: Pending with zero counts.
        result = original(self)
        if _runtime.active_state() is not None and isinstance(result.result, dict):
            command = dict(result.result["Command"])
            command.update(
                Status="Pending",
                StatusDetails="Pending",
                CompletedCount=0,
                ErrorCount=0,
                DeliveryTimedOutCount=0,
            )
            return ActionResult({"Command": command})
        return result

    return send_command_action


# -- ListCommandInvocations -----------------------------------------------------------------------


def _plugin_output(invocation: dict[str, Any]) -> str:
    output = str(invocation.get("StandardOutputContent", ""))
    if invocation.get("StandardErrorContent"):
        output += "\n----------ERROR-------\n" + invocation["StandardErrorContent"]
    return output[:LIST_OUTPUT_LIMIT]


def _parse_time(value: str) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


def _invocation_view(command: Command, invocation: dict[str, Any], details: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "CommandId": command.command_id,
        "InstanceId": invocation["InstanceId"],
        "InstanceName": "",
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": invocation.get("DocumentVersion", "$DEFAULT"),
        "RequestedDateTime": command.requested_date_time,
        "Status": invocation["Status"],
        "StatusDetails": invocation["StatusDetails"],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
        "ServiceRole": command.service_role_arn,
        "NotificationConfig": command.notification_config,
        "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": False},
    }
    if details:
        view["CommandPlugins"] = [
            {
                "Name": invocation.get("PluginName", "aws:runShellScript"),
                "Status": invocation["Status"],
                "StatusDetails": invocation["StatusDetails"],
                "ResponseCode": invocation["ResponseCode"],
                "ResponseStartDateTime": _parse_time(invocation.get("ExecutionStartDateTime", "")),
                "ResponseFinishDateTime": _parse_time(invocation.get("ExecutionEndDateTime", "")),
                "Output": _plugin_output(invocation),
                "StandardOutputUrl": "",
                "StandardErrorUrl": "",
                "OutputS3Region": command.output_s3_region or command.backend_region,
                **({"OutputS3BucketName": command.output_s3_bucket_name} if command.output_s3_bucket_name else {}),
                **({"OutputS3KeyPrefix": command.output_s3_key_prefix} if command.output_s3_key_prefix else {}),
            }
        ]
    return view


_INVOCATION_FILTERS = {"InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName"}


def _matches(view: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    for flt in filters:
        key, value = flt.get("key"), str(flt.get("value", ""))
        if key not in _INVOCATION_FILTERS:
            raise InvalidFilterKey(f"The specified key is not valid: {key}")
        if key == "Status" and view["Status"] != value:
            return False
        if key == "DocumentName" and view["DocumentName"] != value:
            return False
        if key in ("InvokedAfter", "InvokedBefore"):
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
            requested = view["RequestedDateTime"].replace(tzinfo=None)
            if (key == "InvokedAfter" and requested < moment) or (key == "InvokedBefore" and requested > moment):
                return False
    return True


def list_command_invocations(
    self: SimpleSystemManagerBackend,
    *,
    command_id: str | None,
    instance_id: str | None,
    details: bool,
    filters: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    commands = self.list_commands(command_id, None)
    views = []
    for command in sorted(commands, key=lambda c: c.requested_date_time, reverse=True):
        for invocation in command.invocations:
            if instance_id and invocation["InstanceId"] != instance_id:
                continue
            view = _invocation_view(command, invocation, details)
            if _matches(view, filters):
                views.append(view)
    return views


def list_command_invocations_action(self: SimpleSystemManagerResponse) -> ActionResult:
    views = self.ssm_backend.list_command_invocations(  # type: ignore[attr-defined]
        command_id=self._get_param("CommandId"),
        instance_id=self._get_param("InstanceId"),
        details=bool(self._get_param("Details", False)),
        filters=self._get_param("Filters", []) or [],
    )
    page, next_token = _paginate(views, self._get_param("MaxResults"), self._get_param("NextToken"))
    result: dict[str, Any] = {"CommandInvocations": page}
    if next_token:
        result["NextToken"] = next_token
    return ActionResult(result)


# -- DescribeInstanceInformation ------------------------------------------------------------------

_INFO_FILTER_FIELDS = {
    "InstanceIds": "InstanceId",
    "PingStatus": "PingStatus",
    "PlatformTypes": "PlatformType",
    "ResourceType": "ResourceType",
    "AgentVersion": "AgentVersion",
}


def _instance_information(state: SimulatedAgentState | None, instance: Any, now: datetime.datetime) -> dict:
    online = instance.state == "running" and not (state and state.is_agent_offline(instance.id))
    last_ping = state.last_ping(instance.id, online, now) if state else now
    return {
        "InstanceId": instance.id,
        "PingStatus": "Online" if online else "ConnectionLost",
        "LastPingDateTime": last_ping,
        "AgentVersion": AGENT_VERSION,
        "IsLatestVersion": False,
        "PlatformType": "Linux",
        "PlatformName": "Ubuntu",
        "PlatformVersion": "22.04",
        "ResourceType": "EC2Instance",
        "IPAddress": instance.private_ip,
        "ComputerName": instance.private_dns_name,
        "AssociationStatus": "Success",
        "SourceId": instance.id,
        "SourceType": "AWS::EC2::Instance",
    }


def describe_instance_information(
    self: SimpleSystemManagerBackend, filters: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Every non-terminated EC2 instance of this account and region is a managed node."""
    for key in filters:
        if key not in _INFO_FILTER_FIELDS:
            raise InvalidFilterKey(f"The specified key is not valid: {key}")
    state = _runtime.active_state()
    now = utcnow()
    result = []
    for instance in _ec2(self).all_instances():
        if instance.state in ("terminated", "shutting-down"):
            continue
        info = _instance_information(state, instance, now)
        if all(str(info[_INFO_FILTER_FIELDS[key]]) in values for key, values in filters.items()):
            result.append(info)
    return result


def describe_instance_information_action(self: SimpleSystemManagerResponse) -> ActionResult:
    filters: dict[str, list[str]] = {}
    for flt in self._get_param("InstanceInformationFilterList", []) or []:
        filters.setdefault(flt["key"], []).extend(flt.get("valueSet", []))
    for flt in self._get_param("Filters", []) or []:
        filters.setdefault(flt["Key"], []).extend(flt.get("Values", []))
    infos = self.ssm_backend.describe_instance_information(filters)  # type: ignore[attr-defined]
    page, next_token = _paginate(infos, self._get_param("MaxResults"), self._get_param("NextToken"))
    result: dict[str, Any] = {"InstanceInformationList": page}
    if next_token:
        result["NextToken"] = next_token
    return ActionResult(result)


def _paginate(items: list[Any], max_results: Any, next_token: Any) -> tuple[list[Any], str | None]:
    start = int(next_token) if next_token else 0
    if not max_results:
        return items[start:], None
    end = start + int(max_results)
    return items[start:end], (str(end) if end < len(items) else None)


_MODELS = "moto.ssm.models"
_RESPONSES = "moto.ssm.responses"
_BACKEND = "SimpleSystemManagerBackend"
_RESPONSE = "SimpleSystemManagerResponse"

PATCHES = (
    wraps(
        "ssm.send_command",
        _MODELS,
        _BACKEND,
        "send_command",
        "refuse instances that are not running, address only the named instances (moto adds every "
        "instance of the region) and let each instance's simulated agent answer",
        _wrap_send_command,
    ),
    wraps(
        "ssm.command_delivery_timed_out_count",
        _MODELS,
        "Command",
        "response_object",
        "report DeliveryTimedOutCount (moto omits it) for commands to offline agents",
        _wrap_response_object,
    ),
    wraps(
        "ssm.send_command_answers_pending",
        _RESPONSES,
        _RESPONSE,
        "send_command",
        "SendCommand answers Pending with zero counts, as AWS does before any agent ran",
        _wrap_send_command_action,
    ),
    adds(
        "ssm.list_command_invocations",
        _MODELS,
        _BACKEND,
        "list_command_invocations",
        "moto 5.2.5 lacks ListCommandInvocations",
        list_command_invocations,
    ),
    adds(
        "ssm.describe_instance_information",
        _MODELS,
        _BACKEND,
        "describe_instance_information",
        "moto 5.2.5 lacks DescribeInstanceInformation",
        describe_instance_information,
    ),
    adds(
        "ssm.list_command_invocations_action",
        _RESPONSES,
        _RESPONSE,
        "list_command_invocations",
        "route the ListCommandInvocations action to the backend method added above",
        list_command_invocations_action,
    ),
    adds(
        "ssm.describe_instance_information_action",
        _RESPONSES,
        _RESPONSE,
        "describe_instance_information",
        "route the DescribeInstanceInformation action to the backend method added above",
        describe_instance_information_action,
    ),
)
