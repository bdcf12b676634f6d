"""GET /v1/diagnostics on the embedded AWS: the stack's tables and bus exist, a cluster's
instances are tagged and managed by SSM; what cannot be known locally says `unknown`."""

from __future__ import annotations

from typing import Any

from restarter_local.engine import LocalAws
from tests.integration.harness import ApiClient, Seed


def checks(answer: Any) -> dict[str, dict[str, str]]:
    assert answer.status == 200, answer.body
    return {c["name"]: c for c in answer.json()["data"]["checks"]}


def test_given_the_stack_when_diagnosed_then_every_table_and_the_bus_exist(api: ApiClient) -> None:
    found = checks(api.call("GET", "/v1/diagnostics", key="reader"))

    tables = [c for name, c in found.items() if name.startswith("table ")]
    assert len(tables) == 9 and all(c["status"] == "ok" for c in tables)
    assert found["event bus restarter-local"]["status"] == "ok"
    # the embedded AWS routes events to the functions itself, not through EventBridge rules
    assert found["rule to AlarmRecoveryFunction"]["status"] == "warning"


def test_given_a_cluster_when_diagnosed_then_its_instances_tag_ssm_and_gpus_are_checked(
    aws: LocalAws, seed: Seed, api: ApiClient
) -> None:
    cluster = seed(instance_count=2)
    aws.agent.set_agent_offline(cluster.instance_ids[1])

    answer = api.call("GET", "/v1/diagnostics", key="reader", query={"cluster_id": [cluster.id]})

    found = checks(answer)
    first, second = cluster.instance_ids
    assert found[f"instance {first}"]["status"] == "ok"
    assert found[f"tag restarter:cluster on {first}"]["status"] == "ok"
    assert found[f"SSM agent on {first}"]["status"] == "ok"
    assert found[f"SSM agent on {second}"]["status"] == "missing"
    assert found["GPUs of p4d.24xlarge"]["detail"].startswith("8 x")
    # moto has no iam:SimulatePrincipalPolicy and the local engine sets no role ARN
    assert found["restart role may reboot, stop, start and run commands"]["status"] == "unknown"
    assert answer.json()["data"]["summary"]["missing"] == 1


def test_given_another_tenants_cluster_when_diagnosed_then_not_found(seed: Seed, api: ApiClient) -> None:
    cluster = seed()

    answer = api.call("GET", "/v1/diagnostics", key="other", query={"cluster_id": [cluster.id]})

    assert answer.status == 404 and answer.json()["error"]["code"] == "NOT_FOUND"
