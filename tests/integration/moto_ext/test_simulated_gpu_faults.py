"""The simulated GPUs (``moto_ext/gpu_sim.py``): the sectioned health report in the captures' value
styles, each GPU fault in its section, what cures it (reset_gpu < reboot < stop_start), `nvidia-smi -r`
and GPUs that are late after a boot.

Every test drives moto through boto3 inside ``mock_aws()`` after ``install_extensions(state)``;
reboots and stop/starts are moto's instant ones unless a test sets timings.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from restarter_local.moto_ext import InstanceTimings, SimulatedAgentState, _runtime, default_fatal_xid_line, xid_line
from restarter_local.moto_ext.data import A100_XML, H100_CAPTURE
from restarter_local.moto_ext.gpu_sim import GpuFault
from tests.integration.moto_ext.harness import IMAGE, PORTS, health, launch, run

# The contract's QUERY_FIELDS (restarter.domain.gpu.nvidia_smi), in order.
FIELDS = (
    *("index", "pci.bus_id", "uuid", "name", "serial"),
    *("ecc.errors.uncorrected.volatile.total", "ecc.errors.uncorrected.aggregate.total"),
    *("retired_pages.pending", "remapped_rows.pending", "remapped_rows.failure"),
    *("temperature.gpu", "power.draw", "clocks_throttle_reasons.active"),
)
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def section(report: str, name: str) -> tuple[int, list[str]]:
    """(rc, body lines) of one `### section <name> rc=<rc>`."""
    lines = report.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith(f"### section {name} rc=")]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("###"))
    return int(lines[start].rsplit("rc=", 1)[1]), lines[start + 1 : end]


def rows(report: str) -> list[dict[str, str]]:
    rc, body = section(report, "gpus")
    assert rc == 0, body
    return [dict(zip(FIELDS, line.split(", "), strict=True)) for line in body]


def kernel(report: str) -> list[str]:
    return section(report, "kernel")[1]


def capture_block(title: str) -> list[str]:
    """The lines of one `# <title>` block of the H100 capture."""
    lines = H100_CAPTURE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line == f"# {title}")
    body = lines[start + 3 :]  # the `# $ command` line and the rule after the title
    return body[: next(i for i, line in enumerate(body) if line.startswith("####"))]


def capture_idle_row() -> dict[str, str]:
    header, values = [line for line in capture_block("idle :: query-gpu (csv, what the exporter parses)") if line][:2]
    return dict(zip(header.split(", "), values.split(", "), strict=True))


def at_gpu(line: str, bus_id: str) -> str:
    """A sample kernel line aimed at the GPU ``bus_id`` (00000000:20:1C.0 -> PCI:0000:20:1c)."""
    _, bus, device = bus_id.split(":")
    return re.sub(r"\(PCI:[0-9a-fA-F:.]+\)", f"(PCI:0000:{bus.lower()}:{device[:2].lower()})", line, count=1)


def reboot(ec2: Any, instance_id: str) -> None:
    ec2.reboot_instances(InstanceIds=[instance_id])


def stop_start(ec2: Any, instance_id: str) -> None:
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    ec2.start_instances(InstanceIds=[instance_id])


def reset(ssm: Any, instance_id: str) -> dict[str, Any]:
    return run(ssm, instance_id, "reset_gpu", {"gpus": "all"})


# -- a healthy node -------------------------------------------------------------------------------


def test_a_healthy_h100_node_reports_every_section_in_the_captures_value_styles(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given an idle p5 (8 H100)
    [instance_id] = launch(ec2, "p5.48xlarge")
    # when it runs the health check
    report = health(ssm, instance_id)
    # then the sections come in the health script's order, each answered
    headers = [line.split(" rc=")[0].removeprefix("### section ") for line in report.splitlines() if "###" in line]
    assert headers == ["gpus", "nvlink", "processes", "versions", "kernel", "dcgm", "workload", "### end"]
    # and each GPU row carries the idle H100 capture's values where the capture has them
    captured = capture_idle_row()
    gpus = rows(report)
    assert [row["index"] for row in gpus] == [str(i) for i in range(8)]
    for row in gpus:
        assert row["name"] == captured["name"]
        for name in ("retired_pages.pending", "remapped_rows.pending", "remapped_rows.failure"):
            assert row[name] == captured[name]
        assert row["ecc.errors.uncorrected.volatile.total"] == captured["ecc.errors.uncorrected.volatile.total"]
        assert row["ecc.errors.uncorrected.aggregate.total"] == captured["ecc.errors.uncorrected.aggregate.total"]
        assert row["clocks_throttle_reasons.active"] == captured["clocks_event_reasons.active"]
        assert re.fullmatch(r"00000000:[0-9A-F]{2}:1[CD]\.0", row["pci.bus_id"])
        assert re.fullmatch(r"1\d{12}", row["serial"]) and re.fullmatch(r"\d+\.\d\d", row["power.draw"])
    assert len({row["pci.bus_id"] for row in gpus}) == len({row["uuid"] for row in gpus}) == 8
    # and the NVLink block of every GPU is the capture's 18 links
    captured_links = capture_block("capabilities :: nvlink -s")[1:19]
    _, nvlink = section(report, "nvlink")
    assert len(nvlink) == 8 * 19
    assert nvlink[0] == f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {gpus[0]['uuid']})"
    assert nvlink[1:19] == captured_links and captured_links[-1] == "\t Link 17: 26.562 GB/s"
    # and the versions are the capture's driver and CUDA, DCGM is absent, nothing runs, the kernel is quiet
    version = {
        k.strip(): v.strip() for k, v in (line.split(":") for line in capture_block("capabilities :: version") if line)
    }
    assert section(report, "versions") == (
        0,
        [f"driver_version: {version['DRIVER version']}", f"cuda_version: {version['CUDA Version']}"],
    )
    assert section(report, "dcgm") == (127, ["not installed"])
    assert section(report, "processes") == (0, []) and section(report, "kernel") == (0, [])
    # and the identities are stable between checks
    assert rows(health(ssm, instance_id)) == gpus


def test_other_models_show_their_driver_links_and_memory_error_features(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given an A100, a V100 (with a pending remap on GPU 1) and an A10G instance
    [a100], [v100], [a10g] = launch(ec2, "p4d.24xlarge"), launch(ec2, "p3dn.24xlarge"), launch(ec2, "g5.xlarge")
    state.inject_gpu_fault(v100, GpuFault("row_remap_pending", gpu=1))
    # when each runs the health check
    a100_report, v100_report, a10g_report = health(ssm, a100), health(ssm, v100), health(ssm, a10g)
    # then the A100 has the A100 XML's driver and 12 links, the V100 6, the A10G none
    assert section(a100_report, "versions")[1][0] == "driver_version: 535.54.03"
    assert "<driver_version>535.54.03</driver_version>" in A100_XML.read_text(encoding="utf-8")
    assert section(a100_report, "nvlink")[1][1:13] == [f"\t Link {n}: 25 GB/s" for n in range(12)]
    assert section(v100_report, "nvlink")[1][1:7] == [f"\t Link {n}: 25.781 GB/s" for n in range(6)]
    assert section(a10g_report, "nvlink") == (0, [])
    # and the V100 retires pages where Ampere remaps rows: its pending remap is a page pending retirement
    v100_gpus = rows(v100_report)
    assert [(g["retired_pages.pending"], g["remapped_rows.pending"]) for g in v100_gpus[:2]] == [
        ("No", "[N/A]"),
        ("Yes", "[N/A]"),
    ]
    [a10g_gpu] = rows(a10g_report)
    assert (a10g_gpu["retired_pages.pending"], a10g_gpu["remapped_rows.pending"]) == ("[N/A]", "No")


def test_a_running_workload_holds_a_process_on_every_gpu(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a p4d whose workload container runs
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.start_container(instance_id, IMAGE, PORTS)
    # when it runs the health check
    report = health(ssm, instance_id)
    # then every GPU has one python3 process, and the GPUs are busy
    uuids = [row["uuid"] for row in rows(report)]
    processes = [line.split(", ") for line in section(report, "processes")[1]]
    assert [p[0] for p in processes] == uuids and {p[2] for p in processes} == {"python3"}
    assert all(p[1].isdigit() for p in processes)
    assert {row["clocks_throttle_reasons.active"] for row in rows(report)} == {"0x0000000000000000"}
    assert section(report, "workload")[1] == [f"container: running {IMAGE}", "port: tcp/80 open"]


# -- each fault in its section --------------------------------------------------------------------


@pytest.mark.parametrize("xid", [79, 119, 13])
def test_an_xid_fault_adds_the_real_kernel_line_aimed_at_its_gpu(
    state: SimulatedAgentState, ec2: Any, ssm: Any, xid: int
) -> None:
    # given Xid `xid` on GPU 2 of a p5 whose workload runs
    [instance_id] = launch(ec2, "p5.48xlarge")
    state.start_container(instance_id, IMAGE, PORTS)
    before = rows(health(ssm, instance_id))
    state.inject_gpu_fault(instance_id, GpuFault("xid", gpu=2, xid=xid))
    # when the health check runs
    report = health(ssm, instance_id)
    # then the kernel section has the sample file's line for that Xid, naming GPU 2's PCI address
    sample = default_fatal_xid_line() if xid == 79 else xid_line(xid)
    assert kernel(report) == [at_gpu(sample, before[2]["pci.bus_id"])]
    assert f"): {xid}," in kernel(report)[0]
    # and Xid 79 also takes the GPU off the bus: gone from gpus, nvlink and processes
    lost = before[2]["uuid"]
    visible = [row["uuid"] for row in rows(report)]
    assert (lost not in visible, len(visible)) == ((True, 7) if xid == 79 else (False, 8))
    assert (lost in "\n".join(section(report, "nvlink")[1])) is (xid != 79)
    assert (lost in "\n".join(section(report, "processes")[1])) is (xid != 79)


def test_an_xid_without_a_sample_line_is_written_in_the_drivers_form(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given Xid 95 (no sample line) on GPU 1
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("xid", gpu=1, xid=95))
    # when the health check runs
    [line] = kernel(health(ssm, instance_id))
    # then the line has the form of the sample lines, for GPU 1 (00000000:10:1D.0)
    assert re.fullmatch(r"\[ *\d+\.\d{6}\] NVRM: Xid \(PCI:0000:10:1d\): 95, pid='<unknown>', name=<unknown>, .+", line)


def test_ecc_and_row_remap_faults_show_in_the_gpu_rows(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a double-bit ECC error on GPU 0, a pending remap on GPU 1, a remap failure on GPU 2
    [instance_id] = launch(ec2, "p5.48xlarge")
    for kind, gpu in (("ecc_dbe", 0), ("row_remap_pending", 1), ("row_remap_failure", 2)):
        state.inject_gpu_fault(instance_id, GpuFault(kind, gpu=gpu))  # type: ignore[arg-type]
    # when the health check runs
    report = health(ssm, instance_id)
    gpus = rows(report)
    # then each shows in its GPU's row, and the ECC error with an Xid 48 kernel line
    ecc = ("ecc.errors.uncorrected.volatile.total", "ecc.errors.uncorrected.aggregate.total")
    assert [gpus[0][name] for name in ecc] == ["1", "1"]
    assert (gpus[1]["remapped_rows.pending"], gpus[1]["remapped_rows.failure"]) == ("Yes", "No")
    assert (gpus[2]["remapped_rows.pending"], gpus[2]["remapped_rows.failure"]) == ("No", "Yes")
    assert all(row[name] == "0" for row in gpus[1:] for name in ecc)
    [line] = kernel(report)
    assert "NVRM: Xid (PCI:0000:10:1c): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit" in line


def test_a_link_down_is_inactive_in_its_gpus_nvlink_block(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given NVLink down on GPU 3 of a p5
    [instance_id] = launch(ec2, "p5.48xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("nvlink_down", gpu=3))
    # when the health check runs
    _, nvlink = section(health(ssm, instance_id), "nvlink")
    # then GPU 3's block has one inactive link, the others all theirs
    blocks = [nvlink[i : i + 19] for i in range(0, len(nvlink), 19)]
    assert [sum(line.endswith("<inactive>") for line in block) for block in blocks] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert blocks[3][1] == "\t Link 0: <inactive>"


def test_no_driver_fails_every_nvidia_smi_section_like_the_real_message(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a p4d whose driver is not loaded
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("no_driver"))
    # when the health check and a GPU reset run
    report = health(ssm, instance_id)
    reset_result = reset(ssm, instance_id)
    # then every nvidia-smi section fails with rc 9 and the driver message; versions are empty
    for name in ("gpus", "gpus-xml", "nvlink", "processes"):
        assert section(report, name) == (9, [NO_DRIVER])
    assert section(report, "versions") == (0, ["driver_version: ", "cuda_version: "])
    assert (reset_result["Status"], reset_result["ResponseCode"]) == ("Failed", 9)


# -- what cures what ------------------------------------------------------------------------------


def test_a_reboot_applies_a_pending_remap_but_a_gpu_off_the_bus_needs_a_new_host(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a pending remap on GPU 1 and Xid 79 on GPU 5
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("row_remap_pending", gpu=1))
    state.inject_gpu_fault(instance_id, GpuFault("xid", gpu=5, xid=79))
    # when the instance reboots
    reboot(ec2, instance_id)
    report = health(ssm, instance_id)
    # then the remap is applied, but GPU 5 stays missing (this boot's kernel log has no Xid)
    gpus = rows(report)
    assert len(gpus) == 7 and {row["remapped_rows.pending"] for row in gpus} == {"No"}
    assert kernel(report) == []
    # and after a stop and start (a new host) all 8 GPUs are back
    stop_start(ec2, instance_id)
    assert len(rows(health(ssm, instance_id))) == 8
    assert state.gpu_faults(instance_id) == []


def test_an_application_xid_survives_every_rung_until_cleared(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given Xid 13 (the application's) on GPU 0
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("xid", gpu=0, xid=13))
    line = kernel(health(ssm, instance_id))
    # when every rung runs in turn, then the line is back after each
    assert reset(ssm, instance_id)["Status"] == "Success"
    assert kernel(health(ssm, instance_id)) == line
    reboot(ec2, instance_id)
    assert kernel(health(ssm, instance_id)) == line
    stop_start(ec2, instance_id)
    assert kernel(health(ssm, instance_id)) == line
    # and only clearing removes it
    state.clear_gpu_faults(instance_id)
    assert kernel(health(ssm, instance_id)) == []


def test_a_missing_gpu_without_lateness_comes_back_only_on_a_new_host(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given GPU 0 of a p4d missing
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("gpu_missing", gpu=0))
    assert len(rows(health(ssm, instance_id))) == 7
    # when it reboots, then it is still missing; after a stop and start it is back
    reboot(ec2, instance_id)
    assert len(rows(health(ssm, instance_id))) == 7
    stop_start(ec2, instance_id)
    assert len(rows(health(ssm, instance_id))) == 8


@pytest.fixture
def no_engine_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine's clock (one an earlier test's engine left active): GPU times are real seconds at
    the timings' scale."""
    monkeypatch.setattr(_runtime, "_clock", [None])


@pytest.mark.usefixtures("no_engine_clock")
def test_a_late_gpu_appears_late_seconds_after_each_boot(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given GPU 3 late by 0.8 simulated seconds (real seconds: no timings)
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("gpu_missing", gpu=3, late_seconds=0.8))
    for boot in (lambda: None, lambda: reboot(ec2, instance_id), lambda: stop_start(ec2, instance_id)):
        # when the node (re)boots
        boot()
        started = time.monotonic()
        # then the GPU is missing at first, and appears once 0.8 s have passed
        assert len(rows(health(ssm, instance_id))) == 7
        while len(rows(health(ssm, instance_id))) == 7 and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert time.monotonic() - started >= 0.8
        assert len(rows(health(ssm, instance_id))) == 8


@pytest.mark.usefixtures("no_engine_clock")
def test_lateness_counts_simulated_seconds_from_the_end_of_a_timed_reboot(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given timings at 1000x (a reboot keeps the agent offline 0.2 s) and GPU 0 late by 1000 simulated s
    state.timings = InstanceTimings(reboot=(200, 200), time_scale=1000.0)
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(instance_id, GpuFault("gpu_missing", gpu=0, late_seconds=1000))
    # when the instance reboots and the agent is back
    asked = time.monotonic()
    reboot(ec2, instance_id)
    while run(ssm, instance_id, "health_check", {"ports": []})["Status"] != "Success":
        assert time.monotonic() - asked < 5
        time.sleep(0.01)
    # then the GPU is still missing, and appears 1 real second after the boot (1.2 s after asking)
    assert len(rows(health(ssm, instance_id))) == 7
    while len(rows(health(ssm, instance_id))) == 7 and time.monotonic() - asked < 5:
        time.sleep(0.01)
    assert time.monotonic() - asked >= 1.2
    assert len(rows(health(ssm, instance_id))) == 8


def test_gpu_reset_is_refused_while_the_workload_runs_then_cures_reset_class_faults(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a double-bit ECC error, a pending remap, Xid 119 and NVLink down, with the workload running
    [instance_id] = launch(ec2, "p4d.24xlarge")
    state.start_container(instance_id, IMAGE, PORTS)
    for fault in (GpuFault("ecc_dbe"), GpuFault("row_remap_pending", gpu=1), GpuFault("xid", gpu=2, xid=119)):
        state.inject_gpu_fault(instance_id, fault)
    state.inject_gpu_fault(instance_id, GpuFault("nvlink_down", gpu=4))
    report = health(ssm, instance_id)
    first_bus, first_pid = rows(report)[0]["pci.bus_id"], section(report, "processes")[1][0].split(", ")[1]
    # when a reset is asked while the workload holds the GPUs
    refused = reset(ssm, instance_id)
    # then it fails naming the GPU and its process, and nothing is cured
    assert (refused["Status"], refused["ResponseCode"]) == ("Failed", 3)
    assert refused["StandardErrorContent"] == f"GPU {first_bus} is in use by pid {first_pid}; stop the workload first\n"
    assert len(state.gpu_faults(instance_id)) == 4
    # when the workload stops and the reset runs
    assert run(ssm, instance_id, "stop_services", {"grace_seconds": 10})["Status"] == "Success"
    done = reset(ssm, instance_id)
    # then every GPU is reset like nvidia-smi -r says it
    assert done["Status"] == "Success"
    bus_ids = [row["pci.bus_id"] for row in rows(report)]
    assert done["StandardOutputContent"].splitlines() == [
        *(f"GPU {bus} was successfully reset." for bus in bus_ids),
        "All done.",
    ]
    # and the reset-class faults are cured: the volatile ECC count is 0 (the aggregate keeps it), the remap
    # is applied, the Xid line is gone; the NVLink (reboot-class) is still down
    after = health(ssm, instance_id)
    gpus = rows(after)
    assert [gpus[0][f"ecc.errors.uncorrected.{count}.total"] for count in ("volatile", "aggregate")] == ["0", "1"]
    assert gpus[1]["remapped_rows.pending"] == "No" and kernel(after) == []
    assert "<inactive>" in "\n".join(section(after, "nvlink")[1])
    # and a new host has a clean GPU: the aggregate count is gone too
    stop_start(ec2, instance_id)
    assert rows(health(ssm, instance_id))[0]["ecc.errors.uncorrected.aggregate.total"] == "0"


def test_a_node_whose_only_gpu_is_missing_finds_no_devices_and_a_reset_names_its_gpus(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a g5.xlarge whose one GPU is missing, and a p4d
    [single], [eight] = launch(ec2, "g5.xlarge"), launch(ec2, "p4d.24xlarge")
    state.inject_gpu_fault(single, GpuFault("gpu_missing"))
    # when the single-GPU node runs the health check and a reset, then nvidia-smi finds no devices
    report = health(ssm, single)
    for name in ("gpus", "gpus-xml", "nvlink", "processes"):
        assert section(report, name) == (6, ["No devices were found"])
    assert reset(ssm, single)["ResponseCode"] == 6
    # and on the p4d a reset of GPUs 1 and 3 resets those only; bad indices are refused like nvidia-smi
    done = run(ssm, eight, "reset_gpu", {"gpus": [1, 3]})["StandardOutputContent"]
    assert (
        done
        == "GPU 00000000:10:1D.0 was successfully reset.\nGPU 00000000:20:1D.0 was successfully reset.\nAll done.\n"
    )
    assert run(ssm, eight, "reset_gpu", {"gpus": ["x"]})["ResponseCode"] == 2


# -- read by the Lambda's parser ------------------------------------------------------------------

PARSED: list[tuple[GpuFault | None, set[str]]] = [
    (None, set()),
    (GpuFault("xid", gpu=2, xid=79), {"xid_79", "gpu_missing"}),
    (GpuFault("xid", gpu=2, xid=119), {"xid_119"}),
    (GpuFault("ecc_dbe"), {"ecc_uncorrectable_volatile", "xid_48"}),
    (GpuFault("row_remap_pending", gpu=1), {"row_remap_pending"}),
    (GpuFault("row_remap_failure", gpu=1), {"row_remap_failure"}),
    (GpuFault("gpu_missing", gpu=7), {"gpu_missing"}),
    (GpuFault("nvlink_down", gpu=3), {"nvlink_down"}),
    (GpuFault("no_driver"), {"no_driver"}),
]


def fault_id(fault: GpuFault | None) -> str:
    return "healthy" if fault is None else f"{fault.kind}{fault.xid or ''}"


@pytest.mark.parametrize(("fault", "codes"), PARSED, ids=[fault_id(f) for f, _ in PARSED])
def test_the_lambdas_parser_finds_each_fault_in_the_simulated_report(
    state: SimulatedAgentState, ec2: Any, ssm: Any, fault: GpuFault | None, codes: set[str]
) -> None:
    report = pytest.importorskip("restarter.domain.gpu.report")
    assert FIELDS == pytest.importorskip("restarter.domain.gpu.nvidia_smi").QUERY_FIELDS
    # given a p4d with the fault (or none)
    [instance_id] = launch(ec2, "p4d.24xlarge")
    if fault is not None:
        state.inject_gpu_fault(instance_id, fault)
    # when the Lambda's parser judges its health report against the type's 8 A100
    assessment = report.assess_node(
        instance_id, report.parse_health_output(health(ssm, instance_id)), report.GpuExpectation(8, "A100")
    )
    # then it finds what the fault is (a healthy node: nothing, and it is ready)
    found = {finding.code for finding in assessment.findings}
    assert codes <= found if codes else found == set()
    assert assessment.ready is (fault is None)
