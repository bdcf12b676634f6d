"""Xid kernel-log lines, read and classified by NVIDIA's Xid catalog (Xid-Catalog.xlsx, "Analyzing Xid
Errors with the Xid Catalog"; the facts are summarised in shared/data/xid/XID_CATALOG_NOTES.md).

The catalog gives each Xid an immediate-action bucket. Most buckets name an action outright; the
WORKFLOW_* buckets and XID_154 depend on the message or on the other Xids of the same GPU, and are
decided in `classify_xids`. An Xid the table does not know is reported, never acted on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from restarter.domain.gpu.findings import Action, Finding

CATALOG = "NVIDIA Xid catalog (Xid-Catalog.xlsx)"

# What each plain immediate-action bucket asks of us. CONTACT_SUPPORT means the hardware is suspect.
BUCKET_ACTIONS: dict[str, Action] = {
    "IGNORE": "report",
    "RESTART_APP": "report",
    "RESET_GPU": "reset_gpu",
    "RESTART_VM": "reboot",
    "RESTART_BM": "reboot",
    "CONTACT_SUPPORT": "replace",
}


@dataclass(frozen=True)
class XidRule:
    xid: int
    mnemonic: str
    bucket: str  # the catalog's immediate-action bucket
    action: Action  # ours when the bucket alone decides; the workflow's usual outcome otherwise
    why: str


def _rule(xid: int, mnemonic: str, bucket: str, why: str, action: Action | None = None) -> XidRule:
    return XidRule(xid, mnemonic, bucket, action or BUCKET_ACTIONS[bucket], why)


_NVLINK5 = "decode intrInfo/errorStatus; we read only the Fatal/Nonfatal token"
XID_TABLE: dict[int, XidRule] = {
    rule.xid: rule
    for rule in (
        _rule(8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "RESTART_APP", "the application's channel stopped"),
        _rule(13, "ROBUST_CHANNEL_GR_EXCEPTION", "RESTART_APP", "usually the application; repeats call for DCGM diag"),
        _rule(
            31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "RESTART_APP", "usually the application; repeats: DCGM diag"
        ),
        _rule(32, "ROBUST_CHANNEL_PBDMA_ERROR", "RESTART_APP", "a corrupted push buffer: the application"),
        _rule(43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE", "the driver already recovered the channel"),
        _rule(45, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "WORKFLOW_XID_45", "cleanup after other errors", "report"),
        _rule(48, "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48", "double-bit ECC: reset the GPU", "reset_gpu"),
        _rule(62, "PMU_HALT_ERROR", "RESET_GPU", "an internal micro-controller halted"),
        _rule(63, "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE", "a page was retired or a row remapped as designed"),
        _rule(64, "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU", "the remapping/retirement failed"),
        _rule(68, "ROBUST_CHANNEL_NVDEC0_ERROR", "RESTART_APP", "a video decoder exception"),
        _rule(69, "ROBUST_CHANNEL_GR_CLASS_ERROR", "RESTART_APP", "a graphics class error: the application"),
        _rule(
            74, "NVLINK_ERROR", "WORKFLOW_NVLINK_ERR", "fatal link errors need a reboot; others are reported", "reboot"
        ),
        _rule(79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM", "the GPU left the PCIe bus"),
        _rule(92, "EXCESSIVE_SBE_INTERRUPTS", "IGNORE", "a high corrected-error rate: watch it"),
        _rule(94, "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP", "a contained memory error: only the app was hit"),
        _rule(95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU", "an uncontained memory error"),
        _rule(109, "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "RESET_GPU", "a context switch timed out"),
        _rule(110, "SEC_FAULT_ERROR", "RESET_GPU", "a security fault"),
        _rule(119, "GSP_RPC_TIMEOUT", "RESET_GPU", "the GSP firmware stopped answering"),
        _rule(120, "GSP_ERROR", "RESET_GPU", "the GSP firmware failed"),
        _rule(121, "C2C_ERROR", "IGNORE", "a C2C link error (GB200)"),
        _rule(136, "ALI_TRAINING_FAIL", "RESET_GPU", "NVLink training failed"),
        _rule(140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "RESET_GPU", "an unrecovered ECC error"),
        _rule(143, "GPU_INIT_ERROR", "RESET_GPU", "the GPU failed to initialise"),
        _rule(144, "NVLINK_SAW_ERROR", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(145, "NVLINK_RLW_ERROR", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        # 146-148 and 150 are in the catalog's 144-150 NVLink5 range; our notes do not carry their mnemonics.
        _rule(146, "NVLINK5 (144-150 range)", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(147, "NVLINK5 (144-150 range)", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(148, "NVLINK5 (144-150 range)", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(149, "NVLINK_NETIR_ERROR", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(150, "NVLINK5 (144-150 range)", "WORKFLOW_NVLINK5_ERR", _NVLINK5, "reset_gpu"),
        _rule(154, "GPU_RECOVERY_ACTION_CHANGED", "XID_154", "the driver states the recovery it needs", "reset_gpu"),
        _rule(155, "NVLINK_SW_DEFINED_ERROR", "RESET_GPU", "an NVLink software-defined error"),
        _rule(156, "RESOURCE_RETIREMENT_EVENT", "RESET_GPU", "a resource was retired; a reset applies it"),
        _rule(158, "GPU_FATAL_TIMEOUT", "RESET_GPU", "a fatal GPU timeout"),
    )
}

# Xid 154's recovery codes (the driver prints "from 0x<a> (<text>) to 0x<b> (<text>)").
RECOVERY_ACTIONS: dict[int, tuple[Action, str]] = {
    0x0: ("report", "None"),
    0x1: ("reset_gpu", "GPU Reset Required"),
    0x2: ("reboot", "Node Reboot Required"),
    0x3: ("reset_gpu", "Drain P2P"),
    0x4: ("reset_gpu", "Drain and Reset"),
}
REPEATED_FAULTS = 3  # Xid 13/31 this often on one GPU: WORKFLOW_XID_13/31's "repeats" case

_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F]{1,8}:[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}(?:\.[0-7])?)\):\s*(?P<xid>\d+)"
    r"(?:,\s*pid=(?P<pid>'<unknown>'|<unknown>|\d+))?(?:,\s*name=(?P<name>[^,]*))?(?:,\s*(?P<text>.*))?$"
)
_FALLEN_OFF = re.compile(r"fallen off the bus", re.IGNORECASE)
_FALLEN_PCI = re.compile(r"(?:PCI:|GPU )(?P<pci>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)")
_RECOVERY_TO = re.compile(r"to 0x(?P<code>[0-9a-fA-F]+)(?: \((?P<text>[^)]*)\))?")
_FATAL = re.compile(r"(?<![\w-])fatal", re.IGNORECASE)  # not "non-fatal" / "nonfatal"
_NVLINK5_SEVERITY = re.compile(r"\b(?P<severity>Fatal|Nonfatal)\b")


class XidEvent(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    xid: int
    pci_bus_id: str | None
    pid: int | None = None
    process_name: str | None = None
    message: str
    line: str
    # False for a "GPU has fallen off the bus" line without an Xid prefix (read as Xid 79).
    explicit: bool = True


def parse_xid_lines(text: str) -> list[XidEvent]:
    """Every Xid line whatever its prefix (`[123.4]`, `kernel: [..]`, `[Sun Feb 23 ...]`); other lines skipped."""
    events: list[XidEvent] = []
    for raw in text.splitlines():
        line = raw.strip()
        match = _XID.search(line)
        if match:
            pid = match.group("pid")
            events.append(
                XidEvent(
                    xid=int(match.group("xid")),
                    pci_bus_id=match.group("pci"),
                    pid=int(pid) if pid and pid.isdigit() else None,
                    process_name=(match.group("name") or "").strip() or None,
                    message=(match.group("text") or "").strip(),
                    line=line,
                )
            )
        elif _FALLEN_OFF.search(line):
            pci = _FALLEN_PCI.search(line)
            events.append(
                XidEvent(xid=79, pci_bus_id=pci.group("pci") if pci else None, message=line, line=line, explicit=False)
            )
    return events


def _device(event: XidEvent) -> str:
    """Group key for one GPU: `0000:3b:00`, `0000:3B:00.0` and `PCI:0000:3b:00` are the same device."""
    parts = (event.pci_bus_id or "?").split(".")[0].split(":")
    return ":".join(f"{int(part, 16):x}" if re.fullmatch(r"[0-9a-fA-F]+", part) else part for part in parts)


def _variant(event: XidEvent) -> str:
    """Within one Xid, the messages that call for different actions are different findings."""
    if event.xid == 154:
        to = _RECOVERY_TO.search(event.message)
        return to.group("code").lower() if to else "?"
    if event.xid == 74:
        return "fatal" if _FATAL.search(event.message) else "other"
    if 144 <= event.xid <= 150:
        severity = _NVLINK5_SEVERITY.search(event.message)
        return severity.group("severity") if severity else "?"
    return ""


def _decide(xid: int, variant: str, count: int, others: set[int]) -> tuple[Action, str, str]:
    """(action, summary, source) for one burst; `others` are the other Xids on the same GPU."""
    rule = XID_TABLE[xid]
    source = f"{CATALOG}: {rule.bucket}"
    headline = f"Xid {xid} ({rule.mnemonic})"
    if xid in (13, 31):
        if count >= REPEATED_FAULTS:
            return (
                "report",
                f"{headline} repeated {count} times on this GPU: run DCGM diagnostics (possible hardware fault).",
                f"{source} (WORKFLOW_XID_{xid}: repeats)",
            )
        return "report", f"{headline}: usually the application; restart it.", f"{source} (WORKFLOW_XID_{xid}: lone)"
    if xid == 45:
        if others:
            return (
                "report",
                f"{headline} with Xid {sorted(others)}: a cleanup side effect, follow the other Xid.",
                f"{source}: not solo",
            )
        return "report", f"{headline} alone: restart Fabric Manager (not done by us).", f"{source}: solo, RESTART_FM"
    if xid == 48:
        if others & {63, 64}:
            return (
                "reset_gpu",
                f"{headline} with Xid {sorted(others & {63, 64})}: drain the GPU, then reset it.",
                f"{source}: with 63/64, drain and reset",
            )
        return "reset_gpu", f"{headline} alone: reset the GPU.", f"{source}: lone, RESET_GPU"
    if xid == 74:
        if variant == "fatal":
            return "reboot", f"{headline}: a fatal NVLink error.", f"{source}: message says fatal"
        return "report", f"{headline}: a non-fatal NVLink error; watch for repeats on the link.", f"{source}: not fatal"
    if 144 <= xid <= 150:
        scope = "full intrInfo/errorStatus decode is out of scope, only the Fatal/Nonfatal token is read"
        if variant == "Nonfatal":
            return "report", f"{headline}: Nonfatal NVLink5 error.", f"{source} ({scope})"
        if variant == "Fatal":
            return "reset_gpu", f"{headline}: Fatal NVLink5 error: reset the GPU.", f"{source} ({scope})"
        return (
            "reset_gpu",
            f"{headline}: NVLink5 error without a Fatal/Nonfatal token: reset the GPU.",
            f"{source} ({scope})",
        )
    if xid == 154:
        known = RECOVERY_ACTIONS.get(int(variant, 16)) if variant != "?" else None
        if known is None:
            return (
                "reset_gpu",
                f"{headline}: an unknown recovery action 0x{variant}; reset the GPU.",
                f"{source}: unknown code",
            )
        action, text = known
        return (
            action,
            f"{headline}: the driver asks for 0x{int(variant, 16):x} ({text}).",
            f"{source}: recovery action 0x{int(variant, 16):x}",
        )
    return rule.action, f"{headline}: {rule.why}.", source


def classify_xids(events: Sequence[XidEvent]) -> list[Finding]:
    """One finding per burst (the same Xid and message class on the same device), with its count and its
    first line as evidence. A "fallen off the bus" line folds into an Xid 79 of the same device."""
    groups: dict[tuple[int, str, str], list[XidEvent]] = {}
    for event in events:
        groups.setdefault((event.xid, _device(event), _variant(event)), []).append(event)
    xids_by_device: dict[str, set[int]] = {}
    for xid, device, _ in groups:
        xids_by_device.setdefault(device, set()).add(xid)
    findings: list[Finding] = []
    for (xid, device, variant), burst in groups.items():
        explicit = [event for event in burst if event.explicit] or burst
        first = explicit[0]
        if xid in XID_TABLE:
            others = xids_by_device[device] - {xid}
            action, summary, source = _decide(xid, variant, len(explicit), others)
            bucket: str | None = XID_TABLE[xid].bucket
        else:
            action, bucket = "report", None
            summary = f"Xid {xid} is not in the table: reported, no action taken."
            source = f"{CATALOG}: not in the table"
        if not first.explicit:
            summary += " (read from a 'fallen off the bus' line without an Xid prefix)"
        findings.append(
            Finding(
                code=f"xid_{xid}",
                action=action,
                summary=summary,
                evidence=first.line,
                pci_bus_id=first.pci_bus_id,
                count=len(explicit),
                xid=xid,
                catalog_bucket=bucket,
                source=source,
            )
        )
    return findings
