"""GPU faults named in a fleet file, posted to `/local/faults` or given to `restarter fault`: the syntax,
what is refused, and what the simulated node then reports (`restarter_local.fleet_file`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from restarter_cli.main import main
from restarter_local.engine import LocalAws
from restarter_local.fleet_file import FleetFile, FleetFileError, apply_faults, load_fleet, seed_fleet
from restarter_local.local_control import FAULTS_PATH, LocalControl
from restarter_local.moto_ext import SimulatedAgentState, default_fatal_xid_line

FLEET = """
clusters:
  - {id: c1, name: training, instance_type: p4d.24xlarge, instance_count: 2}
faults:
  - {kind: xid, cluster_id: c1, instance: 0, gpu: 0, xid: 79}
  - {kind: ecc_dbe, cluster_id: c1, gpu: 2}
  - {kind: gpu_missing, cluster_id: c1, instance: 1, gpu: 3, late_seconds: 60}
  - {kind: nvlink_down, cluster_id: c1, instance: 1, gpu: 5}
  - {kind: row_remap_pending, cluster_id: c1, instance: 1}
"""
KEY = "rk_0123abcd_" + "k" * 40


def fleet_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def cluster(gpu_count: int = 8) -> Any:
    return SimpleNamespace(id="c1", instance_ids=["i-0", "i-1"], gpu_count=gpu_count)


def faults_of(agent: SimulatedAgentState, instance_id: str) -> list[tuple[str, int, int | None, float | None]]:
    return [(f.kind, f.gpu, f.xid, f.late_seconds) for f in agent.gpu_faults(instance_id)]


def test_given_gpu_faults_in_a_fleet_file_when_applied_then_each_sits_on_its_gpu(tmp_path: Path) -> None:
    # given the fleet file's GPU faults
    fleet = load_fleet(fleet_file(tmp_path, FLEET))
    agent = SimulatedAgentState()
    # when they are applied
    apply_faults(SimpleNamespace(agent=agent), fleet, [cluster()])  # type: ignore[arg-type]
    # then each is on its instance and GPU (index 0 when not named)
    assert faults_of(agent, "i-0") == [("xid", 0, 79, None), ("ecc_dbe", 2, None, None)]
    assert faults_of(agent, "i-1") == [
        ("gpu_missing", 3, None, 60.0),
        ("nvlink_down", 5, None, None),
        ("row_remap_pending", 0, None, None),
    ]
    # and none of them is the legacy kernel line
    assert agent.xid_lines("i-0") == []


def test_given_an_xid_fault_without_a_number_then_it_stays_the_legacy_kernel_line() -> None:
    # given the old syntax
    fleet = FleetFile.model_validate(
        {"clusters": [{"id": "c1", "name": "x"}], "faults": [{"kind": "xid", "cluster_id": "c1"}]}
    )
    agent = SimulatedAgentState()
    # when applied, then it is one real Xid 79 line and no GPU fault
    apply_faults(SimpleNamespace(agent=agent), fleet, [cluster()])  # type: ignore[arg-type]
    assert agent.xid_lines("i-0") == [default_fatal_xid_line()]
    assert agent.gpu_faults("i-0") == []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            "{kind: xid, cluster_id: c1, xid: 79, late_seconds: 5}",
            "faults[0]: `late_seconds` is only for a gpu_missing fault, not xid",
        ),
        (
            "{kind: close_port, cluster_id: c1, port: 80, gpu: 1}",
            "`gpu` is only for a GPU fault (xid, ecc_dbe, row_remap_pending,",
        ),
        ("{kind: ecc_dbe, cluster_id: c1, xid: 48}", "`xid` is only for an xid fault, not ecc_dbe"),
        (
            "{kind: gpu_missing, cluster_id: c1, late_seconds: 0}",
            "faults[0].late_seconds: Input should be greater than 0",
        ),
        ("{kind: nvlink_down, cluster_id: c1, gpu: -1}", "faults[0].gpu: Input should be greater than or equal to 0"),
        ("{kind: xid, cluster_id: c1, xid: 0}", "faults[0].xid: Input should be greater than or equal to 1"),
        ("{kind: melted_gpu, cluster_id: c1}", "faults[0].kind: Input should be"),
    ],
)
def test_given_a_gpu_fault_with_fields_that_do_not_fit_then_the_file_is_refused(
    tmp_path: Path, fault: str, message: str
) -> None:
    text = "clusters:\n  - {id: c1, name: x}\nfaults:\n  - " + fault + "\n"
    with pytest.raises(FleetFileError, match=r"fleet file .*fleet\.yaml: ") as refused:
        load_fleet(fleet_file(tmp_path, text))
    assert message in str(refused.value)


def test_given_a_gpu_index_past_the_instance_types_gpus_when_applied_then_it_is_refused(tmp_path: Path) -> None:
    fleet = load_fleet(
        fleet_file(tmp_path, "clusters:\n  - {id: c1, name: x}\nfaults:\n  - {kind: ecc_dbe, cluster_id: c1, gpu: 8}\n")
    )
    with pytest.raises(FleetFileError, match=r"faults\[0\]: gpu 8 is out of range: c1's instances have 8 GPU\(s\)"):
        apply_faults(SimpleNamespace(agent=SimulatedAgentState()), fleet, [cluster()])  # type: ignore[arg-type]


def test_the_local_faults_endpoint_takes_gpu_faults_and_clears_them() -> None:
    # given a serving fleet's local control
    agent = SimulatedAgentState()
    control = LocalControl(SimpleNamespace(agent=agent), KEY, "default", [cluster()])  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {KEY}"}

    def post(body: dict[str, Any]) -> Any:
        return control.answer("POST", FAULTS_PATH, headers, json.dumps(body))

    # when an Xid 79 and a late GPU are posted
    xid = post({"kind": "xid", "cluster_id": "c1", "instance": 1, "gpu": 4, "xid": 79})
    late = post({"kind": "gpu_missing", "cluster_id": "c1", "late_seconds": 30})
    # then both are injected and echoed back
    assert (xid.status, json.loads(xid.body)["data"]) == (
        200,
        {"kind": "xid", "cluster_id": "c1", "instance": 1, "gpu": 4, "xid": 79},
    )
    assert late.status == 200
    assert faults_of(agent, "i-1") == [("xid", 4, 79, None)]
    assert faults_of(agent, "i-0") == [("gpu_missing", 0, None, 30.0)]
    # and a fault that does not fit is refused
    refused = post({"kind": "nvlink_down", "cluster_id": "c1", "late_seconds": 30})
    assert refused.status == 400 and "late_seconds" in refused.body
    # and clear_gpu removes the instance's GPU faults
    assert post({"kind": "clear_gpu", "cluster_id": "c1", "instance": 1}).status == 200
    assert agent.gpu_faults("i-1") == [] and len(agent.gpu_faults("i-0")) == 1


@pytest.mark.parametrize(
    ("argv", "body", "printed"),
    [
        (
            ["xid", "--cluster-id", "c1", "--xid", "79", "--gpu", "2", "--instance", "1"],
            {"kind": "xid", "cluster_id": "c1", "instance": 1, "gpu": 2, "xid": 79},
            "injected xid",
        ),
        (
            ["gpu_missing", "--cluster-id", "c1", "--late-seconds", "60"],
            {"kind": "gpu_missing", "cluster_id": "c1", "late_seconds": 60.0},
            "injected gpu_missing",
        ),
        (["clear_gpu", "--cluster-id", "c1"], {"kind": "clear_gpu", "cluster_id": "c1"}, "cleared GPU faults"),
    ],
)
def test_restarter_fault_sends_the_gpu_fault_to_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], body: Any, printed: str
) -> None:
    # given a server that accepts every fault
    sent: list[tuple[str, str, Any]] = []

    def local_request(client: Any, method: str, path: str, payload: Any = None) -> Any:
        sent.append((method, path, payload))
        return SimpleNamespace(ok=True, body={"data": payload})

    monkeypatch.setattr("restarter_cli.remote.local_request", local_request)
    # when the command runs
    code = main(["fault", *argv, "--url", "http://127.0.0.1:1/v1", "--api-key", KEY])
    # then it posted the fault and says so
    assert code == 0
    assert sent == [("POST", "/local/faults", body)]
    assert capsys.readouterr().out.strip() == printed


def test_a_seeded_fleets_gpu_fault_shows_in_the_nodes_health_report(aws: LocalAws, tmp_path: Path) -> None:
    # given the fleet seeded on the embedded AWS
    [seeded] = seed_fleet(aws, load_fleet(fleet_file(tmp_path, FLEET)))
    ssm = aws.client("ssm")
    # when the first instance runs the health check
    command = ssm.send_command(
        InstanceIds=[seeded.instance_ids[0]],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["# restarter-op: health_check", '# restarter-args: {"ports": []}']},
    )["Command"]
    result = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=seeded.instance_ids[0])
    report = result["StandardOutputContent"].splitlines()
    # then GPU 0 fell off the bus (7 rows, its real Xid 79 line in the kernel section) and GPU 2 has the ECC error
    gpus = report[report.index("### section gpus rc=0") + 1 : report.index("### section nvlink rc=0")]
    kernel = report[report.index("### section kernel rc=0") + 1 : report.index("### section dcgm rc=127")]
    assert len(gpus) == 7 and not any(row.startswith("0, 00000000:10:1C.0,") for row in gpus)
    assert gpus[1].split(", ")[5:7] == ["1", "1"]  # slot 2 is index 1 once slot 0 is gone
    assert kernel[0].endswith(
        "NVRM: Xid (PCI:0000:10:1c): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    )
    assert ": 48, " in kernel[1]
