"""A node judged from its sectioned health report: one rule per test, each from a report text."""

from __future__ import annotations

import pytest

from restarter.domain.gpu.findings import (
    ACTIONS,
    READINESS_BLOCKING,
    SETTLING_CODES,
    Finding,
    action_at_least,
    worst_action,
)
from restarter.domain.gpu.report import GpuExpectation, NodeAssessment, assess_node, parse_health_output

GPU0 = (
    "0, 00000000:10:1C.0, GPU-aaa, NVIDIA A100-SXM4-40GB, 1324020001234, "
    + "0, 0, No, No, No, 33, 52.10, 0x0000000000000001"
)
GPU1 = (
    "1, 00000000:10:1D.0, GPU-bbb, NVIDIA A100-SXM4-40GB, 1324020001235, "
    + "0, 0, No, No, No, 35, 60.00, 0x0000000000000000"
)
LINKS_UP = "\n".join(
    f"GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{u})\n\t Link 0: 25 GB/s\n\t Link 1: 25 GB/s"
    for i, u in ((0, "aaa"), (1, "bbb"))
)
DCGM_PASS = "| Deployment | Pass |\n| Blacklist | Pass |"
TWO_A100 = GpuExpectation(count=2, model="A100")


def frame(**sections: tuple[int, str] | None) -> str:
    """A health report in the contract's format; the defaults are a healthy two-A100 node. A section set
    to None is left out; section names with a dash are spelled with an underscore (gpus_xml)."""
    parts: dict[str, tuple[int, str] | None] = {
        "gpus": (0, f"{GPU0}\n{GPU1}"),
        "nvlink": (0, LINKS_UP),
        "kernel": (0, ""),
        "versions": (0, "driver_version: 535.54.03\ncuda_version: 12.2"),
        "dcgm": (0, DCGM_PASS),
        "processes": (0, "GPU-aaa, 4242, python3\nGPU-bbb, 4243, python3"),
        "workload": (0, "container: running tensorone/pytorch:2.1\nport: tcp/30888 open"),
    }
    parts.update({name.replace("_", "-"): value for name, value in sections.items()})
    lines = ["restarter-health: 2"]
    for name, value in parts.items():
        if value is not None:
            lines += [f"### section {name} rc={value[0]}", *([value[1]] if value[1] else [])]
    return "\n".join([*lines, "### end"])


def assess(text: str, expected: GpuExpectation = TWO_A100, *, missing_before: bool = False) -> NodeAssessment:
    return assess_node("i-0abc", parse_health_output(text), expected, missing_before=missing_before)


def codes(assessment: NodeAssessment) -> list[tuple[str, str, int | None]]:
    return [(f.code, f.action, f.gpu_index) for f in assessment.findings]


def test_a_healthy_node_is_ready_with_its_facts() -> None:
    assessment = assess(frame())
    assert assessment.findings == []
    assert assessment.ready and assessment.worst_action is None
    assert (assessment.visible_gpus, assessment.expected_gpus) == (2, 2)
    assert [gpu.uuid for gpu in assessment.gpus] == ["GPU-aaa", "GPU-bbb"]
    assert (assessment.driver_version, assessment.cuda_version) == ("535.54.03", "12.2")
    assert (assessment.dcgm, assessment.gpu_processes) == ("passed", 2)


def test_the_report_is_read_by_section_and_a_missing_one_is_tolerated() -> None:
    report = parse_health_output(frame(dcgm=None, kernel=(124, "")))
    assert report.version == 2 and report.complete
    assert report.section("dcgm") is None
    kernel = report.section("kernel")
    assert kernel is not None and (kernel.rc, kernel.body) == (124, "")
    gpus = report.section("gpus")
    assert gpus is not None and gpus.body.splitlines() == [GPU0, GPU1]
    assert not parse_health_output("restarter-health: 2\n### section gpus rc=0\n").complete


def test_an_assessment_round_trips_through_its_json() -> None:
    assessment = assess(frame(kernel=(0, "NVRM: Xid (PCI:0000:10:1c): 79, GPU has fallen off the bus.")))
    dumped = assessment.model_dump(mode="json")
    assert (dumped["worst_action"], dumped["ready"]) == ("reboot", False)
    assert NodeAssessment.model_validate(dumped) == assessment


@pytest.mark.parametrize(
    ("gpus", "evidence"),
    [
        ((127, "nvidia-smi: command not found"), "command not found"),
        ((9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."), "NVIDIA-SMI has failed"),
        ((0, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."), "NVIDIA-SMI has failed"),
    ],
    ids=["rc127", "rc9", "failed-body"],
)
def test_no_driver_means_a_reboot_and_no_missing_gpu_finding(gpus: tuple[int, str], evidence: str) -> None:
    assessment = assess(frame(gpus=gpus, nvlink=None, versions=None))
    assert codes(assessment) == [("no_driver", "reboot", None)]
    assert evidence in assessment.findings[0].evidence
    assert "no_driver" in SETTLING_CODES


def test_a_hanging_nvidia_smi_is_a_reboot_but_a_slow_probe_is_only_reported() -> None:
    assert codes(assess(frame(gpus=(124, "")))) == [("health_script_timeout", "reboot", None)]
    slow = assess(frame(nvlink=(124, ""), dcgm=(124, ""), kernel=(124, "")))
    assert codes(slow) == [("health_script_timeout", "report", None)] * 3
    assert slow.ready and slow.dcgm == "not run"


def test_a_report_without_its_gpus_section_cannot_be_judged_ready() -> None:
    assessment = assess(frame(gpus=None))
    assert codes(assessment) == [("health_report_incomplete", "reboot", None)]
    assert not assessment.ready


def test_a_missing_gpu_is_a_reboot_and_the_evidence_lists_what_is_visible() -> None:
    lost = "Unable to determine the device handle for GPU 0000:10:1D.0: Unknown Error"
    assessment = assess(frame(gpus=(15, f"{GPU0}\n{lost}")))
    assert codes(assessment) == [("gpu_missing", "reboot", None)]
    finding = assessment.findings[0]
    assert "1 of 2 GPUs visible" in finding.summary
    assert finding.evidence.splitlines() == ["visible (index bus_id): 0 00000000:10:1C.0", lost]


def test_a_gpu_still_missing_after_a_reboot_needs_a_stop_start() -> None:
    assessment = assess(frame(gpus=(0, GPU0)), missing_before=True)
    assert codes(assessment) == [("gpu_missing", "stop_start", None)]
    assert assessment.visible_gpus == 1


def test_when_the_csv_fails_the_xml_fallback_counts_the_gpus() -> None:
    xml = (
        '<nvidia_smi_log><gpu id="00000000:10:1D.0"><uuid>GPU-bbb</uuid></gpu>'
        '<gpu id="00000000:10:1C.0"><uuid>GPU-aaa</uuid></gpu></nvidia_smi_log>'
    )
    assessment = assess(frame(gpus=(15, "Unknown Error"), gpus_xml=(0, xml)))
    assert [(gpu.index, gpu.uuid) for gpu in assessment.gpus] == [(0, "GPU-aaa"), (1, "GPU-bbb")]
    assert assessment.findings == []  # names unread (-d memory sections only): the model is not judged


@pytest.mark.parametrize(
    ("model", "mismatch"),
    [("A100", False), ("a100-sxm4", False), ("H100", True)],
)
def test_the_expected_model_is_a_case_insensitive_part_of_the_name(model: str, mismatch: bool) -> None:
    assessment = assess(frame(), GpuExpectation(count=2, model=model))
    assert codes(assessment) == ([("gpu_model_mismatch", "report", None)] if mismatch else [])


@pytest.mark.parametrize(
    ("field", "value", "code", "action"),
    [
        (5, "2", "ecc_uncorrectable_volatile", "reboot"),
        (8, "Yes", "row_remap_pending", "reboot"),
        (9, "Yes", "row_remap_failure", "replace"),
        (7, "Yes", "retired_pages_pending", "reboot"),
    ],
)
def test_memory_errors_of_one_gpu_name_it(field: int, value: str, code: str, action: str) -> None:
    # given GPU 1's line with one memory field set (its position in QUERY_FIELDS)
    cells = GPU1.split(", ")
    cells[field] = value
    sick = ", ".join(cells)

    assessment = assess(frame(gpus=(0, f"{GPU0}\n{sick}")))

    assert codes(assessment) == [(code, action, 1)]
    finding = assessment.findings[0]
    assert (finding.evidence, finding.gpu_uuid, finding.pci_bus_id) == (sick, "GPU-bbb", "00000000:10:1D.0")
    assert "memory error" in finding.source


@pytest.mark.parametrize(
    ("mask", "finding"),
    [("0x0000000000000040", True), ("0x0000000000000004", True), ("0x0000000000000001", False), ("[N/A]", False)],
    ids=["hw-thermal", "sw-power-cap", "idle", "unknown"],
)
def test_throttling_is_only_ever_reported(mask: str, finding: bool) -> None:
    throttled = GPU1.rsplit(", ", 1)[0] + f", {mask}"
    assessment = assess(frame(gpus=(0, f"{GPU0}\n{throttled}")))
    assert codes(assessment) == ([("thermal_throttle", "report", 1)] if finding else [])
    assert assessment.ready


def test_a_gpu_with_fewer_active_links_than_the_others_is_down() -> None:
    nvlink = LINKS_UP.replace("GPU-bbb)\n\t Link 0: 25 GB/s", "GPU-bbb)\n\t Link 0: <inactive>")
    assessment = assess(frame(nvlink=(0, nvlink)))
    assert codes(assessment) == [("nvlink_down", "reboot", 1)]
    assert assessment.findings[0].evidence.splitlines() == [
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbb)",
        "Link 0: <inactive>",
    ]
    assert "nvlink_down" in SETTLING_CODES


@pytest.mark.parametrize(
    "nvlink",
    [
        "",
        "GPU 0: Tesla T4 (UUID: GPU-aaa)\n\t Link 0: <inactive>\n"
        + "GPU 1: Tesla T4 (UUID: GPU-bbb)\n\t Link 0: <inactive>",
    ],
    ids=["empty", "all-inactive"],
)
def test_a_pcie_only_node_has_no_nvlink_finding(nvlink: str) -> None:
    assert assess(frame(nvlink=(0, nvlink))).findings == []


def test_a_kernel_xid_is_attached_to_the_gpu_on_its_bus() -> None:
    line = "[ 12.3] NVRM: Xid (PCI:0000:10:1d): 119, pid=1, name=python3, Timeout after 6s of waiting for RPC"
    assessment = assess(frame(kernel=(0, line)))
    assert codes(assessment) == [("xid_119", "reset_gpu", 1)]
    assert (assessment.findings[0].gpu_uuid, assessment.findings[0].evidence) == ("GPU-bbb", line)
    assert not assessment.ready  # reset_gpu blocks readiness


def test_xid_45_with_an_xid_79_follows_the_79() -> None:
    kernel = "\n".join(
        [
            "NVRM: Xid (PCI:0000:10:1c): 45, pid=7, name=python3, Ch 00000010",
            "NVRM: Xid (PCI:0000:10:1c): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
        ]
    )
    assessment = assess(frame(kernel=(0, kernel)))
    assert assessment.worst_action == "reboot"
    assert codes(assessment) == [("xid_79", "reboot", 0), ("xid_45", "report", 0)]  # the worst first


@pytest.mark.parametrize(
    ("dcgm", "state", "finding"),
    [
        ((127, "not installed"), "not installed", False),
        ((0, DCGM_PASS), "passed", False),
        ((226, "| Memory | Fail - GPU 1 had an uncorrectable memory error |"), "failed", True),
        ((1, "Error: unable to establish a connection to the host engine"), "not run", False),
        (None, "not run", False),
    ],
    ids=["not-installed", "passed", "failed", "host-engine-down", "missing"],
)
def test_dcgm_is_read_but_its_failures_are_only_reported(
    dcgm: tuple[int, str] | None, state: str, finding: bool
) -> None:
    assessment = assess(frame(dcgm=dcgm))
    assert assessment.dcgm == state
    assert codes(assessment) == ([("dcgm_diag_failed", "report", None)] if finding else [])
    if finding:
        assert "Fail - GPU 1" in assessment.findings[0].evidence


def test_actions_rise_in_severity_and_only_report_leaves_a_node_ready() -> None:
    assert ACTIONS == ("report", "reset_gpu", "reboot", "stop_start", "replace")
    assert READINESS_BLOCKING == "reset_gpu"
    assert action_at_least("replace", "reboot") and not action_at_least("report", "reset_gpu")

    def finding(action: str) -> Finding:
        return Finding(code="x", action=action, summary="s", evidence="e", source="t")  # type: ignore[arg-type]

    assert worst_action([]) is None
    assert worst_action([finding("report"), finding("stop_start"), finding("reboot")]) == "stop_start"
