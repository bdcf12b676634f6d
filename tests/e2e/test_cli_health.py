"""`restarter health` against `restarter serve`: real reports from the simulated GPUs, with the
faults a fleet file and `restarter fault` inject."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from restarter_cli.main import main
from restarter_local.server import LocalServer

FLEET = """
clusters:
  - {id: cluster_gpu001, name: pretrain-a100, instance_type: p4d.24xlarge,
     ports: [{internal_port: 8888, external_port: 30888}]}
  - {id: cluster_ok0001, name: serving-a10g, instance_type: g5.12xlarge,
     ports: [{internal_port: 8888, external_port: 30888}]}
faults:
  - {kind: xid, cluster_id: cluster_gpu001, gpu: 3, xid: 79}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    fleet.write_text(FLEET)
    with LocalServer(port=0, fleet=fleet, time_scale=600) as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], server: LocalServer, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--url", server.base_url, "--api-key", server.api_key])
    return code, capsys.readouterr().out


def test_given_a_gpu_that_fell_off_the_bus_when_checked_then_unhealthy_with_the_xid_and_the_gpu(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, server, "health", "cluster_gpu001", "--check")

    assert code == 3, out
    assert "cluster cluster_gpu001: unhealthy (worst: reboot)" in out
    assert "7/8 GPUs" in out and "UNHEALTHY" in out
    assert "[reboot] gpu_missing: 7 of 8 GPUs visible" in out
    # the GPU that fell off the bus is no longer listed: the Xid names its PCI address
    assert "[reboot] xid_79 PCI 0000:20:1d:" in out
    assert "NVRM: Xid" in out and "fallen off the bus" in out


def test_given_healthy_gpus_when_checked_then_healthy_as_json_with_every_gpu(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, server, "health", "cluster_ok0001", "--check", "--json")

    assert code == 0, out
    data = json.loads(out)
    assert data["verdict"] == "healthy" and data["pending_check"] is None
    (node,) = data["instances"]
    assert node["source"] == "health_check"
    assert [g["index"] for g in node["assessment"]["gpus"]] == [0, 1, 2, 3]
    assert all("A10G" in g["name"] for g in node["assessment"]["gpus"])


def test_given_an_application_xid_injected_when_checked_then_still_healthy_with_it_reported(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(capsys, server, "fault", "xid", "--cluster-id", "cluster_ok0001", "--xid", "13", "--gpu", "1")
    assert code == 0

    code, out = run(capsys, server, "health", "cluster_ok0001", "--check")

    assert code == 0, out
    assert "[report] xid_13 GPU 1" in out

    # and reading it again without a check answers the same stored report
    code, again = run(capsys, server, "health", "cluster_ok0001")
    assert code == 0 and "[report] xid_13 GPU 1" in again
