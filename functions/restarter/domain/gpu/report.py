"""Judging a GPU node from its health report (the sectioned stdout of the health script, format
`restarter-health: 2`, see docs/gpu-health.md). The expectation (how many GPUs, which model) comes from
the instance type, never from the node: a node cannot vouch for itself. The workload section is judged by
`restarter.domain.health`, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, computed_field

from restarter.domain.gpu.findings import READINESS_BLOCKING, Action, Finding, action_at_least, severity, worst_action
from restarter.domain.gpu.nvidia_smi import (
    GpuSample,
    nvlink_blocks,
    parse_nvlink_status,
    parse_query_csv,
    parse_query_xml,
    pci_key,
)
from restarter.domain.gpu.xid import classify_xids, parse_xid_lines

MEMORY_DOC = "NVIDIA GPU memory error management (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt)"
# NVIDIA/DCGM common/DcgmGPUHardwareLimits.h: DCGM_LIMIT_MAX_RETIRED_PAGES is 63 ("updated to match the
# field diag"; it was 60 before), checked as single + double bit >= limit; legacy GPUs retire at most 64.
RETIRED_PAGES_LIMIT = 63
RETIRED_PAGES_SOURCE = (
    "NVIDIA dynamic page retirement; DCGM_LIMIT_MAX_RETIRED_PAGES = 63 (NVIDIA/DCGM DcgmGPUHardwareLimits.h,"
    " matching NVIDIA's field diagnostic RMA criterion; older DCGM used 60)"
)
SLOWDOWN_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
THROTTLE_SOURCE = "NVML clocks event reasons (nvml.h nvmlClocksEventReasons): informational"
NO_DRIVER_TEXT = "NVIDIA-SMI has failed"
TIMED_OUT = 124

_HEADER = re.compile(r"^### section (?P<name>\S+) rc=(?P<rc>\S*)\s*$")
_VERSION = re.compile(r"^restarter-health:\s*(?P<version>\d+)\s*$")


class HealthSection(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    name: str
    rc: int | None  # None when the header's rc= could not be read
    body: str
    header: str


class RawHealthReport(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    version: int | None = None
    sections: dict[str, HealthSection] = {}
    complete: bool = False  # the `### end` line was seen: the script ran to its end

    def section(self, name: str) -> HealthSection | None:
        return self.sections.get(name)


def parse_health_output(stdout: str) -> RawHealthReport:
    """Sections by name. A section that is missing is simply absent; a repeated one keeps its first copy."""
    version: int | None = None
    sections: dict[str, HealthSection] = {}
    current: tuple[str, int | None, str] | None = None
    body: list[str] = []
    complete = False

    def close() -> None:
        if current is not None and current[0] not in sections:
            sections[current[0]] = HealthSection(
                name=current[0], rc=current[1], body="\n".join(body), header=current[2]
            )

    for line in stdout.splitlines():
        header = _HEADER.match(line)
        if header or line.strip() == "### end":
            close()
            body = []
            current = None
            if header:
                rc = header.group("rc")
                current = (header.group("name"), int(rc) if re.fullmatch(r"-?\d+", rc) else None, line.strip())
            else:
                complete = True
            continue
        if current is None:
            found = _VERSION.match(line.strip())
            version = int(found.group("version")) if found and version is None else version
        else:
            body.append(line)
    close()
    return RawHealthReport(version=version, sections=sections, complete=complete)


@dataclass(frozen=True)
class GpuExpectation:
    count: int
    model: str | None


class NodeAssessment(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    instance_id: str
    gpus: list[GpuSample]
    findings: list[Finding]
    driver_version: str | None
    cuda_version: str | None
    dcgm: str  # "not installed" | "passed" | "failed" | "not run"
    gpu_processes: int
    expected_gpus: int
    visible_gpus: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def worst_action(self) -> Action | None:
        return worst_action(self.findings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ready(self) -> bool:
        worst = worst_action(self.findings)
        return worst is None or not action_at_least(worst, READINESS_BLOCKING)


def _timeout(section: HealthSection, action: Action, why: str) -> Finding:
    return Finding(
        code="health_script_timeout",
        action=action,
        summary=f"The health script's `{section.name}` section timed out (rc=124): {why}.",
        evidence=section.header,
        source="restarter health script: `timeout` exit status 124",
    )


def _read_gpus(report: RawHealthReport, findings: list[Finding]) -> tuple[list[GpuSample], bool]:
    """The GPUs nvidia-smi showed, and whether their count can be judged at all."""
    gpus = report.section("gpus")
    if gpus is None:
        findings.append(
            Finding(
                code="health_report_incomplete",
                action="reboot",
                summary="The health report has no gpus section (cut short or an older script): GPUs cannot be judged.",
                evidence=f"sections: {', '.join(report.sections) or 'none'}; end seen: {report.complete}",
                source="restarter health report format 2",
            )
        )
        return [], False
    if gpus.rc in {127, 9} or NO_DRIVER_TEXT in gpus.body:
        findings.append(
            Finding(
                code="no_driver",
                action="reboot",
                summary="nvidia-smi cannot reach the NVIDIA driver (missing nvidia-smi or driver not loaded).",
                evidence=f"{gpus.header}\n{gpus.body}".strip(),
                source="nvidia-smi exit status 127 (not found) / 9 (driver not loaded)",
            )
        )
        return [], False
    if gpus.rc == TIMED_OUT:
        findings.append(_timeout(gpus, "reboot", "a hanging nvidia-smi is a classic sign of a wedged GPU"))
        return [], False
    samples = parse_query_csv(gpus.body)
    xml = report.section("gpus-xml")
    if gpus.rc not in (0, None) and xml is not None:
        from_xml = parse_query_xml(xml.body)
        samples = from_xml if len(from_xml) > len(samples) else samples
    return samples, True


def _missing(gpus: list[GpuSample], report: RawHealthReport, expected: GpuExpectation, before: bool) -> Finding:
    visible = "; ".join(f"{gpu.index} {gpu.pci_bus_id}" for gpu in gpus) or "none"
    section = report.section("gpus")
    known = {sample.raw for sample in gpus}
    odd = [
        line.strip()
        for line in (section.body if section else "").splitlines()
        if line.strip() and line.strip() not in known
    ]
    return Finding(
        code="gpu_missing",
        action="stop_start" if before else "reboot",
        summary=(
            f"{len(gpus)} of {expected.count} GPUs visible"
            + (": still missing after a reboot, a stop/start moves the instance to other hardware." if before else ".")
        ),
        evidence="\n".join([f"visible (index bus_id): {visible}", *odd]),
        source="EC2 DescribeInstanceTypes GpuInfo count vs nvidia-smi --query-gpu",
    )


def _reading(value: float | None, unit: str) -> str:
    return f"{value:g} {unit}" if value is not None else f"? {unit}"


def _gpu_findings(gpu: GpuSample) -> list[Finding]:
    found: list[Finding] = []

    def add(code: str, action: Action, summary: str, source: str = MEMORY_DOC) -> None:
        found.append(
            Finding(
                code=code,
                action=action,
                summary=summary,
                evidence=gpu.raw,
                source=source,
                gpu_index=gpu.index,
                gpu_uuid=gpu.uuid,
                pci_bus_id=gpu.pci_bus_id,
            )
        )

    if (gpu.ecc_volatile_uncorrected or 0) > 0:
        add(
            "ecc_uncorrectable_volatile",
            "reboot",
            f"GPU {gpu.index}: {gpu.ecc_volatile_uncorrected} uncorrectable ECC errors since the driver loaded.",
        )
    if gpu.remapped_rows_pending:
        add("row_remap_pending", "reboot", f"GPU {gpu.index}: a row remapping is pending; a GPU reset applies it.")
    if gpu.remapped_rows_failure:
        add("row_remap_failure", "replace", f"GPU {gpu.index}: row remapping failed (NVIDIA's RMA criterion).")
    if gpu.retired_pages_pending:
        add("retired_pages_pending", "reboot", f"GPU {gpu.index}: pages are pending retirement; a reset applies it.")
    if gpu.retired_pages is not None and gpu.retired_pages >= RETIRED_PAGES_LIMIT:
        add(
            "retired_pages_limit",
            "replace",
            f"GPU {gpu.index}: {gpu.retired_pages} retired pages (limit {RETIRED_PAGES_LIMIT}).",
            RETIRED_PAGES_SOURCE,
        )
    slow = [reason for reason in gpu.throttle_reasons if reason in SLOWDOWN_REASONS]
    if slow:
        add(
            "thermal_throttle",
            "report",
            f"GPU {gpu.index} is slowed down ({', '.join(slow)}) at {_reading(gpu.temperature_c, 'C')},"
            f" {_reading(gpu.power_w, 'W')}.",
            THROTTLE_SOURCE,
        )
    return found


def _model_mismatch(gpus: list[GpuSample], model: str) -> Finding | None:
    # A GPU whose name could not be read (the XML fallback asks for memory sections only) is not judged.
    wrong = [gpu for gpu in gpus if gpu.name is not None and model.lower() not in gpu.name.lower()]
    if not wrong:
        return None
    return Finding(
        code="gpu_model_mismatch",
        action="report",
        summary=f"Expected {model} GPUs; {len(wrong)} GPU(s) report another name.",
        evidence="\n".join(f"GPU {gpu.index}: {gpu.name}" for gpu in wrong),
        source="EC2 DescribeInstanceTypes GpuInfo name vs nvidia-smi name",
    )


def _nvlink_findings(report: RawHealthReport, findings: list[Finding], gpus: list[GpuSample]) -> None:
    section = report.section("nvlink")
    if section is None:
        return
    if section.rc == TIMED_OUT:
        findings.append(_timeout(section, "report", "NVLink state unknown"))
        return
    links = parse_nvlink_status(section.body)
    active = {index: sum(link.active for link in gpu_links) for index, gpu_links in links.items()}
    expected = max(active.values(), default=0)  # a PCIe-only node has no links and no finding
    by_index = {gpu.index: gpu for gpu in gpus}
    blocks = nvlink_blocks(section.body)
    for index, count in sorted(active.items()):
        if count >= expected:
            continue
        gpu = by_index.get(index)
        down = [
            line for line in blocks[index][1:] if not any(link.active and link.line == line for link in links[index])
        ]
        findings.append(
            Finding(
                code="nvlink_down",
                action="reboot",
                summary=f"GPU {index}: {count} of {expected} NVLinks active (the other GPUs have {expected}).",
                evidence="\n".join([blocks[index][0], *down]),
                gpu_index=index,
                gpu_uuid=gpu.uuid if gpu else None,
                pci_bus_id=gpu.pci_bus_id if gpu else None,
                source="nvidia-smi nvlink --status: fewer active links than the node's other GPUs",
            )
        )


def _xid_findings(report: RawHealthReport, findings: list[Finding], gpus: list[GpuSample]) -> None:
    section = report.section("kernel")
    if section is None:
        return
    if section.rc == TIMED_OUT:
        findings.append(_timeout(section, "report", "Xids may be missing"))
    by_bus = {pci_key(gpu.pci_bus_id): gpu for gpu in gpus if pci_key(gpu.pci_bus_id)}
    for finding in classify_xids(parse_xid_lines(section.body)):
        gpu = by_bus.get(pci_key(finding.pci_bus_id))
        findings.append(finding.model_copy(update={"gpu_index": gpu.index, "gpu_uuid": gpu.uuid}) if gpu else finding)


def _dcgm(report: RawHealthReport, findings: list[Finding]) -> str:
    """dcgmi's levels are not ours to interpret: a failed diag is reported, never acted on by itself."""
    section = report.section("dcgm")
    if section is None:
        return "not run"
    if section.rc == 127 or "not installed" in section.body:
        return "not installed"
    if section.rc == TIMED_OUT:
        findings.append(_timeout(section, "report", "no DCGM verdict"))
        return "not run"
    failed = [line.strip() for line in section.body.splitlines() if "Fail" in line]
    if failed:
        findings.append(
            Finding(
                code="dcgm_diag_failed",
                action="report",
                summary="dcgmi diag reported a failure; what each test's failure calls for is not decided here.",
                evidence="\n".join(failed),
                source="dcgmi diag -r 1 (a Fail result; the level's semantics are not interpreted)",
            )
        )
        return "failed"
    return "passed" if section.rc == 0 else "not run"


def _version(report: RawHealthReport, key: str) -> str | None:
    section = report.section("versions")
    for line in (section.body if section else "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key and value.strip() and value.strip() not in {"N/A", "unknown", "Not Found"}:
            return value.strip()
    return None


def _processes(report: RawHealthReport) -> int:
    section = report.section("processes")
    if section is None or section.rc != 0:
        return 0
    return sum(1 for line in section.body.splitlines() if line.count(",") >= 2)


def assess_node(
    instance_id: str, report: RawHealthReport, expected: GpuExpectation, *, missing_before: bool = False
) -> NodeAssessment:
    findings: list[Finding] = []
    gpus, countable = _read_gpus(report, findings)
    if countable and len(gpus) < expected.count:
        findings.append(_missing(gpus, report, expected, missing_before))
    if expected.model and gpus and (mismatch := _model_mismatch(gpus, expected.model)):
        findings.append(mismatch)
    for gpu in gpus:
        findings.extend(_gpu_findings(gpu))
    _nvlink_findings(report, findings, gpus)
    _xid_findings(report, findings, gpus)
    dcgm = _dcgm(report, findings)
    ordered = sorted(
        findings,
        key=lambda finding: (-severity(finding.action), finding.gpu_index if finding.gpu_index is not None else -1),
    )
    return NodeAssessment(
        instance_id=instance_id,
        gpus=gpus,
        findings=ordered,
        driver_version=_version(report, "driver_version"),
        cuda_version=_version(report, "cuda_version"),
        dcgm=dcgm,
        gpu_processes=_processes(report),
        expected_gpus=expected.count,
        visible_gpus=len(gpus),
    )
