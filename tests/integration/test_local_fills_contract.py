"""The local runtime's fills (restarter_local.moto_ext: APIs moto lacks, answers it gets wrong)
against botocore's output shapes of the real services.

Each test drives the real `Ec2Provider` on the embedded AWS, records the answers botocore parsed
for the filled operations, and validates each against the operation's output shape, then against
the enums, maximums and patterns of the model (`model_violations`): an answer AWS could never give
would let a test pass here and the product fail in AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.validate import ParamValidator

from restarter.adapters.ec2_provider import Ec2Provider
from restarter.domain.models import Cluster
from restarter_local.engine import LocalAws
from tests.contract.conftest import model_violations
from tests.integration.harness import Seed

PORTS = [{"internal_port": 8888, "external_port": 30888, "protocol": "tcp"}]


class ShapeMismatchError(AssertionError):
    """An answer of the embedded AWS that the real service's output shape does not allow."""


@dataclass
class Recorded:
    """The parsed answers of the embedded AWS, by operation, while the test runs."""

    clients: dict[str, Any]
    answers: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def record(self, service: str) -> Any:
        def after_call(parsed: dict[str, Any], model: Any, **_: Any) -> None:
            self.answers.append((service, model.name, parsed))

        return after_call

    def of(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [parsed for s, name, parsed in self.answers if (s, name) == (service, operation)]

    def assert_real_shape(self, service: str, operation: str) -> list[dict[str, Any]]:
        """Every answer of the operation so far fits the real output shape; at least one was given."""
        answers = self.of(service, operation)
        assert answers, f"no {service}:{operation} answer was recorded"
        model = self.clients[service].meta.service_model.operation_model(operation)
        for parsed in answers:
            answer = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
            assert "Error" not in parsed, f"{operation} failed: {parsed['Error']}"
            report = ParamValidator().validate(answer, model.output_shape)
            if report.has_errors():
                raise ShapeMismatchError(f"{service}:{operation}: {report.generate_report()}")
            problems = model_violations(answer, model.output_shape, patterns=False)
            if problems:
                raise ShapeMismatchError(f"{service}:{operation}: " + "; ".join(problems))
        return answers


@pytest.fixture
def recorded(aws: LocalAws) -> Iterator[Recorded]:
    clients = {"ec2": aws.client("ec2"), "ssm": aws.client("ssm")}
    recorded = Recorded(clients)
    handlers = [(client, f"after-call.{service}", recorded.record(service)) for service, client in clients.items()]
    for client, event, handler in handlers:
        client.meta.events.register(event, handler)
    try:
        yield recorded
    finally:  # the clients outlive the engine (one per process): leave them as they were
        for client, event, handler in handlers:
            client.meta.events.unregister(event, handler)


@pytest.fixture
def provider(aws: LocalAws) -> Ec2Provider:
    return Ec2Provider(aws.client("ec2"), aws.client("ssm"))


@pytest.fixture
def cluster(seed: Seed) -> Cluster:
    return seed(instance_count=2)


# ------------------------------------------------------------------ SSM


def test_describe_instance_information(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given: one agent offline
    aws.agent.set_agent_offline(cluster.instance_ids[1])
    # when
    online = provider.agents_online(cluster.instance_ids)
    # then
    assert online == {cluster.instance_ids[0]: True, cluster.instance_ids[1]: False}
    (answer,) = recorded.assert_real_shape("ssm", "DescribeInstanceInformation")
    assert [i["PingStatus"] for i in answer["InstanceInformationList"]] == ["Online", "ConnectionLost"]


def test_describe_instance_information_with_the_old_filter_list(
    recorded: Recorded, cluster: Cluster, aws: LocalAws
) -> None:
    # given
    ssm = aws.client("ssm")
    ask = {"InstanceInformationFilterList": [{"key": "InstanceIds", "valueSet": cluster.instance_ids}], "MaxResults": 5}
    # when
    first = ssm.describe_instance_information(**ask)
    # then
    answers = recorded.assert_real_shape("ssm", "DescribeInstanceInformation")
    assert answers == [first] and len(first["InstanceInformationList"]) == 2


def test_get_command_invocation_of_the_simulated_agents(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster
) -> None:
    # given
    ids = cluster.instance_ids
    # when: a health check, as the restart sends it
    command_id = provider.run_command(ids, "health_check", {"ports": PORTS}, 600)
    invocations = provider.command_invocations(command_id, ids)
    # then
    got = recorded.assert_real_shape("ssm", "GetCommandInvocation")
    assert [g["InstanceId"] for g in got] == ids
    assert all(i.status == "Success" and "restarter-health" in i.stdout for i in invocations)


def test_list_command_invocations_with_details(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given
    command_id = provider.run_command(cluster.instance_ids, "health_check", {"ports": PORTS}, 600)
    # when
    listed = aws.client("ssm").list_command_invocations(CommandId=command_id, Details=True)
    # then
    plugins = [inv["CommandPlugins"] for inv in listed["CommandInvocations"]]
    assert len(plugins) == 2 and all(p and "restarter-health" in p[0]["Output"] for p in plugins)
    recorded.assert_real_shape("ssm", "ListCommandInvocations")


def test_list_command_invocations_paged_and_filtered(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given: two commands, three invocations
    provider.run_command(cluster.instance_ids, "stop_services", {"grace_seconds": 30}, 300)
    provider.run_patch_baseline(cluster.instance_ids[:1])
    ssm = aws.client("ssm")
    # when
    page = ssm.list_command_invocations(MaxResults=2)
    patched = ssm.list_command_invocations(Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}])
    # then
    assert len(page["CommandInvocations"]) == 2 and "NextToken" in page
    assert [i["DocumentName"] for i in patched["CommandInvocations"]] == ["AWS-RunPatchBaseline"]
    recorded.assert_real_shape("ssm", "ListCommandInvocations")


def test_a_failed_and_an_undelivered_command(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given: one GPU reset fails, the other agent is offline
    aws.agent.fail_command(cluster.instance_ids[0], "reset_gpu")
    aws.agent.set_agent_offline(cluster.instance_ids[1])
    # when
    command_id = provider.run_command(cluster.instance_ids, "reset_gpu", {}, 300)
    invocations = provider.command_invocations(command_id, cluster.instance_ids)
    # then
    recorded.assert_real_shape("ssm", "GetCommandInvocation")
    assert [(i.status, i.response_code) for i in invocations] == [("Failed", 1), ("Failed", -1)]
    assert "DeliveryTimedOut" in [g["StatusDetails"] for g in recorded.of("ssm", "GetCommandInvocation")]


def test_send_command_and_list_commands_answer_the_real_command_shape(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given: one agent offline, so the command reports a delivery time-out
    aws.agent.set_agent_offline(cluster.instance_ids[1])
    # when
    command_id = provider.run_command(cluster.instance_ids, "health_check", {"ports": PORTS}, 600)
    (command,) = aws.client("ssm").list_commands(CommandId=command_id)["Commands"]
    # then: SendCommand answers before any agent ran; ListCommands after
    assert command["DeliveryTimedOutCount"] == 1
    (sent,) = recorded.of("ssm", "SendCommand")
    assert (sent["Command"]["Status"], sent["Command"]["DeliveryTimedOutCount"]) == ("Pending", 0)
    recorded.assert_real_shape("ssm", "ListCommands")
    recorded.assert_real_shape("ssm", "SendCommand")


# ------------------------------------------------------------------ EC2


def test_describe_instance_status_healthy_and_never_healthy(
    recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws
) -> None:
    # given
    aws.agent.set_never_healthy(cluster.instance_ids[1])
    # when
    views = provider.describe_instances(cluster.instance_ids)
    # then
    recorded.assert_real_shape("ec2", "DescribeInstanceStatus")
    assert [(v.instance_status, v.system_status) for v in views] == [("ok", "ok"), ("initializing", "initializing")]


@pytest.fixture
def realistic(aws: LocalAws) -> Iterator[LocalAws]:
    """The embedded AWS with real instance transitions (stopping takes simulated minutes); the
    engine is shared by the process, so its instant transitions come back after the test."""
    aws.reset(time_scale=60.0, realistic=True)
    try:
        yield aws
    finally:
        aws.reset(time_scale=60.0, realistic=False)


def test_describe_instance_status_while_stopping(recorded: Recorded, seed: Seed, realistic: LocalAws) -> None:
    # given: an instance stopping
    provider = Ec2Provider(realistic.client("ec2"), realistic.client("ssm"))
    cluster = seed(instance_count=1)
    provider.stop(cluster.instance_ids, force=False)
    # when
    (view,) = provider.describe_instances(cluster.instance_ids)
    # then
    (answer,) = recorded.assert_real_shape("ec2", "DescribeInstanceStatus")
    assert (view.state, view.instance_status) == ("stopping", "not-applicable"), answer


def test_create_snapshots_copies_the_volume_tags(recorded: Recorded, provider: Ec2Provider, cluster: Cluster) -> None:
    # when
    made = provider.create_checkpoint(cluster.instance_ids[:1], {"restarter:checkpoint": "ckpt_1"})
    # then
    (answer,) = recorded.assert_real_shape("ec2", "CreateSnapshots")
    assert set(made[cluster.instance_ids[0]]) == {"/dev/sda1", "/dev/sdf"}
    assert all({"Key": "restarter:cluster", "Value": cluster.id} in s["Tags"] for s in answer["Snapshots"])


def test_replace_root_volume_tasks(recorded: Recorded, provider: Ec2Provider, cluster: Cluster, aws: LocalAws) -> None:
    # given: a checkpoint of the root volume
    instance_id = cluster.instance_ids[0]
    root = provider.create_checkpoint([instance_id], {"restarter:checkpoint": "ckpt_1"})[instance_id]["/dev/sda1"]
    # when
    task_id = provider.replace_root_volume(instance_id, root)
    states = provider.replace_root_volume_states(instance_id, [task_id])
    by_instance = aws.client("ec2").describe_replace_root_volume_tasks(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}], MaxResults=1
    )
    # then
    (created,) = recorded.assert_real_shape("ec2", "CreateReplaceRootVolumeTask")
    assert created["ReplaceRootVolumeTask"]["SnapshotId"] == root
    described = recorded.assert_real_shape("ec2", "DescribeReplaceRootVolumeTasks")
    assert states == {task_id: "succeeded"} and len(described) == 2
    assert [t["ReplaceRootVolumeTaskId"] for t in by_instance["ReplaceRootVolumeTasks"]] == [task_id]
