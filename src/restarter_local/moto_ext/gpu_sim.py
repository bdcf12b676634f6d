"""The simulated GPUs of one instance: what nvidia-smi, the kernel log and `nvidia-smi -r` show, and
the GPU faults that change it.

The health report follows the EC2 adapter's health script (`restarter-health: 2`, sections in the
script's order, see docs/gpu-health.md): the node prints what real nvidia-smi prints, in the value
styles of the captures in ``restarter_local/data`` (the H100 capture's `--query-gpu` CSV and
`nvlink -s` block, the A100 XML's driver and values), so the Lambda's parser reads simulated nodes
exactly as it reads real ones.

A GPU fault sits on one GPU (``gpu``, the physical slot; nvidia-smi numbers the GPUs it can see,
so a missing GPU shifts the indices after it) until a recovery rung strong enough cures it
(``weakest_cure``: the rung NVIDIA's Xid catalog and memory-error guide name, reset_gpu < reboot <
stop_start) or the operator clears it. Faults no rung cures (application Xids, a row-remap
failure, a missing driver, a GPU that is always late) outlive every boot.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .data import default_fatal_xid_line, xid_samples

GpuFaultKind = Literal[
    "xid", "ecc_dbe", "row_remap_pending", "row_remap_failure", "gpu_missing", "nvlink_down", "no_driver"
]
GPU_FAULT_KINDS: tuple[str, ...] = get_args(GpuFaultKind)
Rung = Literal["reset_gpu", "reboot", "stop_start"]
RUNGS: tuple[Rung, ...] = ("reset_gpu", "reboot", "stop_start")

# NVIDIA Xid catalog (Xid-Catalog.xlsx, see data/xid notes): the immediate action of each Xid.
RESET_CLASS_XIDS = frozenset({48, 62, 64, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158})
APP_CLASS_XIDS = frozenset({8, 13, 31, 32, 43, 45, 63, 68, 69, 92, 94})
XID_CURES: dict[int, Rung] = {
    **dict.fromkeys(RESET_CLASS_XIDS, "reset_gpu"),
    74: "reboot",  # NVLink error: the links retrain at boot
    79: "stop_start",  # fallen off the bus: it stays lost on the same host, a new host has a new GPU
}

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
NO_DRIVER_RC = 9
NO_DEVICES, NO_DEVICES_RC = "No devices were found", 6
NOT_INSTALLED = "nvidia-smi: command not found"
BAD_ARGUMENTS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
IDLE_MASK, BUSY_MASK = "0x0000000000000001", "0x0000000000000000"  # clocks event reasons: gpu_idle / none
NA = "[N/A]"

# Free text of the Xids the sample file has no line for (the catalog's short description, or the
# message the driver prints for it).
XID_TEXT = {
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, "
    "subpartition 0.",
    62: "Internal micro-controller halt",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row.",
    92: "High single-bit ECC error rate",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
    109: "Context Switch Timeout Error",
    110: "Security Fault Error",
    120: "GSP Error",
    136: "Link Training Failed",
    140: "ECC Unrecovered Error",
    143: "GPU Initialization Error",
    155: "NVLINK: SW Defined Error",
    156: "Resource Retirement Event",
    158: "GPU Fatal Timeout",
}
_SAMPLE_PCI = re.compile(r"\((?:PCI:)?[0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+(?:\.[0-7])?\)")


@dataclass(frozen=True)
class GpuModel:
    """What one GPU model shows: driver, NVLink, which memory-error features it has, idle/busy readings."""

    driver: str
    cuda: str
    links: int = 0
    link_speed: str = ""
    row_remapping: bool = True  # Ampere and later; older GPUs retire pages instead
    idle: tuple[int, float] = (30, 25.0)  # temperature C, power W
    busy: tuple[int, float] = (60, 250.0)


_R535 = ("535.54.03", "12.2")  # the A100 XML's driver
_R590 = ("590.48.01", "13.1")  # the H100 capture's driver
MODELS: dict[str, GpuModel] = {
    "H100": GpuModel(*_R590, links=18, link_speed="26.562 GB/s", idle=(41, 69.85), busy=(59, 631.95)),
    "H200": GpuModel(*_R590, links=18, link_speed="26.562 GB/s", idle=(38, 76.40), busy=(61, 652.10)),
    "B200": GpuModel(*_R590, links=18, link_speed="53.125 GB/s", idle=(35, 141.20), busy=(58, 905.33)),
    "B300": GpuModel(*_R590, links=18, link_speed="53.125 GB/s", idle=(34, 152.64), busy=(57, 948.02)),
    "A100": GpuModel(*_R535, links=12, link_speed="25 GB/s", idle=(27, 67.03), busy=(55, 298.71)),
    "V100": GpuModel(*_R535, links=6, link_speed="25.781 GB/s", row_remapping=False, idle=(33, 43.12)),
    "A10G": GpuModel(*_R535, idle=(24, 16.83), busy=(62, 220.15)),
    "L4": GpuModel(*_R535, idle=(35, 16.22), busy=(68, 71.48)),
    "L40S": GpuModel(*_R535, idle=(30, 34.57), busy=(65, 322.40)),
    "T4": GpuModel(*_R535, row_remapping=False, idle=(29, 9.89), busy=(61, 69.80)),
    "T4g": GpuModel(*_R535, row_remapping=False, idle=(29, 9.62), busy=(60, 68.95)),
}
DEFAULT_MODEL = GpuModel(*_R590)


@dataclass
class GpuFault:
    """One fault on one GPU of one instance (``gpu`` ignored by ``no_driver``, which hits them all).

    ``booted``: a boot that did not cure it happened since it was injected (Xid 79's line is gone
    then, the GPU still missing); ``residue``: an ecc_dbe that a reset or reboot cured, whose
    aggregate count stays (the InfoROM keeps it) until a new host."""

    kind: GpuFaultKind
    gpu: int = 0
    xid: int | None = None
    late_seconds: float | None = None
    injected_at: float = field(default_factory=time.monotonic)  # inject_gpu_fault sets it on the state's clock
    booted: bool = False
    residue: bool = False

    def __post_init__(self) -> None:
        if self.kind not in GPU_FAULT_KINDS:
            raise ValueError(f"unknown GPU fault kind {self.kind!r}")
        if self.gpu < 0:
            raise ValueError("gpu must be >= 0")
        if (self.kind == "xid") != (self.xid is not None):
            raise ValueError("`xid` is required for an xid fault and only for it")
        if self.late_seconds is not None and (self.kind != "gpu_missing" or self.late_seconds <= 0):
            raise ValueError("`late_seconds` (> 0) is only for a gpu_missing fault")


def weakest_cure(fault: GpuFault) -> Rung | None:
    """The weakest rung that cures the fault; None: no rung does (only clearing it)."""
    if fault.kind == "xid":
        return XID_CURES.get(fault.xid or 0)  # application and unknown Xids: the app keeps causing them
    if fault.kind in ("ecc_dbe", "row_remap_pending"):
        return "reset_gpu"  # a reset applies the pending remap and zeroes the volatile counts
    if fault.kind == "gpu_missing":
        return None if fault.late_seconds is not None else "stop_start"
    if fault.kind == "nvlink_down":
        return "reboot"
    return None  # row_remap_failure (replace the GPU), no_driver (fix the image)


def after_rung(faults: list[GpuFault], rung: Rung, gpus: set[int] | None = None) -> list[GpuFault]:
    """The faults left after ``rung`` ran (on the GPUs ``gpus``; None: all of them)."""
    left: list[GpuFault] = []
    strength = RUNGS.index(rung)
    for fault in faults:
        if gpus is not None and fault.gpu not in gpus:
            left.append(fault)
            continue
        weakest = weakest_cure(fault)
        cured = weakest is not None and strength >= RUNGS.index(weakest)
        if cured and fault.kind == "ecc_dbe" and rung != "stop_start":
            fault.residue = True
        elif cured or (fault.residue and rung == "stop_start"):
            continue
        elif rung != "reset_gpu":
            fault.booted = True
        left.append(fault)
    return left


# -- the GPUs of an instance ------------------------------------------------------------------------


@dataclass(frozen=True)
class SimGpu:
    """One physical GPU slot: identity stable per instance and slot."""

    slot: int
    name: str
    model: GpuModel
    uuid: str
    bus_id: str  # nvidia-smi style, 00000000:10:1C.0
    serial: str

    @property
    def kernel_pci(self) -> str:
        """How the kernel log names it: ``PCI:0000:10:1c``."""
        _, bus, device = self.bus_id.split(":")
        return f"PCI:0000:{bus.lower()}:{device.split('.')[0].lower()}"


def gpu_uuid(instance_id: str, index: int) -> str:
    value = uuid.uuid5(uuid.NAMESPACE_URL, f"restarter-sim://{instance_id}/gpu/{index}")
    return f"GPU-{value}"


def bus_id(slot: int) -> str:
    """p4d/p5-style addresses: two GPUs per PCIe switch (devices 1C, 1D) on buses 10, 20, 90, A0, ..."""
    buses = (0x10, 0x20, 0x90, 0xA0, 0x30, 0x40, 0xB0, 0xC0)
    bus = buses[(slot // 2) % len(buses)] + slot // (2 * len(buses))
    return f"00000000:{bus:02X}:{0x1C + slot % 2:02X}.0"


def _digest(*parts: object) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def instance_gpus(ec2_backend: Any, instance: Any) -> list[SimGpu]:
    """The instance's GPUs as DescribeInstanceTypes GpuInfo lists them (fractional-GPU types, with
    Count 0, show their LogicalGpuCount)."""
    from .data import nvidia_smi_name

    try:
        described = ec2_backend.describe_instance_types([instance.instance_type])
    except Exception:
        return []
    gpus: list[SimGpu] = []
    for instance_type in described:
        for info in (instance_type.get("GpuInfo") or {}).get("Gpus", []):
            count = int(info.get("Count") or 0) or int(info.get("LogicalGpuCount") or 0)
            model = MODELS.get(str(info.get("Name")), DEFAULT_MODEL)
            for _ in range(count):
                slot = len(gpus)
                serial = f"1{_digest(instance.id, slot, 'serial') % 10**12:012d}"
                gpus.append(
                    SimGpu(slot, nvidia_smi_name(info), model, gpu_uuid(instance.id, slot), bus_id(slot), serial)
                )
    return gpus


# -- what the faults make nvidia-smi and the kernel show --------------------------------------------


@dataclass(frozen=True)
class GpuView:
    """The instance's faults as a command sees them at time ``now``; ``boot``: the time of its
    last boot (None: none seen); ``scale``: simulated seconds per unit of those times (the
    agent's state gives the engine's simulated seconds, scale 1)."""

    faults: tuple[GpuFault, ...]
    now: float
    boot: float | None = None
    scale: float = 1.0
    legacy_xids: tuple[str, ...] = ()

    def seconds_since(self, fault: GpuFault) -> float:
        """Simulated seconds since the fault's boot: the last boot, or its injection if later."""
        start = fault.injected_at if self.boot is None else max(self.boot, fault.injected_at)
        return (self.now - start) * self.scale

    def uptime_at(self, fault: GpuFault) -> float:
        """The kernel timestamp of the fault's line: simulated seconds from boot to it (plus the
        time a node takes to load the driver)."""
        if self.boot is None:
            return 7.25
        return max(0.0, fault.injected_at - self.boot) * self.scale + 7.25

    @property
    def no_driver(self) -> bool:
        return any(f.kind == "no_driver" for f in self.faults)

    def on(self, slot: int, *kinds: str) -> list[GpuFault]:
        return [f for f in self.faults if f.gpu == slot and f.kind in kinds]

    def missing(self, slot: int) -> bool:
        for fault in self.on(slot, "gpu_missing", "xid"):
            if fault.kind == "xid" and fault.xid == 79:
                return True
            if fault.kind == "gpu_missing" and (
                fault.late_seconds is None or self.seconds_since(fault) < fault.late_seconds
            ):
                return True
        return False


def _csv_line(index: int, gpu: SimGpu, view: GpuView, busy: bool) -> str:
    model = gpu.model
    ecc = view.on(gpu.slot, "ecc_dbe")
    volatile = sum(1 for f in ecc if not f.residue)
    aggregate = len(ecc)
    remap_pending = bool(view.on(gpu.slot, "row_remap_pending"))
    remap_failure = bool(view.on(gpu.slot, "row_remap_failure"))
    if model.row_remapping:
        retired = NA
        remapped = ("Yes" if remap_pending else "No", "Yes" if remap_failure else "No")
    else:  # page retirement: a pending remap shows as a page pending retirement; no remap failure to show
        retired, remapped = ("Yes" if remap_pending else "No"), (NA, NA)
    temperature, power = model.busy if busy else model.idle
    jitter = _digest(gpu.uuid) % 4
    fields = [
        str(index),
        gpu.bus_id,
        gpu.uuid,
        gpu.name,
        gpu.serial,
        str(volatile),
        str(aggregate),
        retired,
        *remapped,
        str(temperature + jitter),
        f"{power + jitter * 0.37:.2f}",
        BUSY_MASK if busy else IDLE_MASK,
    ]
    return ", ".join(fields)


def _nvlink_block(index: int, gpu: SimGpu, view: GpuView) -> list[str]:
    if not gpu.model.links:
        return []
    down = {0} if view.on(gpu.slot, "nvlink_down") else set()
    lines = [f"GPU {index}: {gpu.name} (UUID: {gpu.uuid})"]
    for link in range(gpu.model.links):
        lines.append(f"\t Link {link}: {'<inactive>' if link in down else gpu.model.link_speed}")
    return lines


def sample_xid_line(xid: int) -> str | None:
    """A real kernel line for Xid ``xid`` from the sample file (None if it has none): for 79 the
    one the agent's default quotes, else the first."""
    if xid == 79:
        return default_fatal_xid_line()
    return next((s.line for s in xid_samples() if s.xid == xid), None)


def kernel_xid_line(xid: int, gpu: SimGpu, seconds: float) -> str:
    """A kernel line for Xid ``xid`` on ``gpu``: the real sample line aimed at this GPU's PCI address
    (the rest verbatim), else one in the driver's form with the catalog's description."""
    sample = sample_xid_line(xid)
    if sample is not None:
        return _SAMPLE_PCI.sub(f"({gpu.kernel_pci})", sample, count=1)
    text = XID_TEXT.get(xid, "Unknown Xid event")
    return f"[{seconds:12.6f}] NVRM: Xid ({gpu.kernel_pci}): {xid}, pid='<unknown>', name=<unknown>, {text}"


def kernel_lines(gpus: list[SimGpu], view: GpuView) -> list[str]:
    by_slot = {gpu.slot: gpu for gpu in gpus}
    lines = list(view.legacy_xids)
    for fault in view.faults:
        gpu = by_slot.get(fault.gpu)
        if gpu is None or view.no_driver:
            continue
        at = view.uptime_at(fault)
        if fault.kind == "xid" and fault.xid is not None and not (fault.xid == 79 and fault.booted):
            lines.append(kernel_xid_line(fault.xid, gpu, at))
        elif fault.kind == "ecc_dbe" and not fault.residue:
            lines.append(kernel_xid_line(48, gpu, at))
    return lines


def _section(name: str, rc: int, body: list[str]) -> list[str]:
    return [f"### section {name} rc={rc}", *body]


def health_report(
    gpus: list[SimGpu],
    view: GpuView,
    *,
    busy: bool,
    workload: list[str],
) -> str:
    """The health script's stdout; ``busy``: the workload container runs (a process on every GPU)."""
    lines = ["restarter-health: 2"]
    if gpus:  # nvidia-smi is installed where the instance type has GPUs
        visible = [gpu for gpu in gpus if not view.missing(gpu.slot)]
        if view.no_driver:
            failing = [NO_DRIVER]
            lines += _section("gpus", NO_DRIVER_RC, failing) + _section("gpus-xml", NO_DRIVER_RC, failing)
            lines += _section("nvlink", NO_DRIVER_RC, failing) + _section("processes", NO_DRIVER_RC, failing)
            driver = cuda = ""
        elif not visible:  # every nvidia-smi query fails alike; the script reads the versions from it too
            for name in ("gpus", "gpus-xml", "nvlink", "processes"):
                lines += _section(name, NO_DEVICES_RC, [NO_DEVICES])
            driver = cuda = ""
        else:
            lines += _section("gpus", 0, [_csv_line(i, gpu, view, busy) for i, gpu in enumerate(visible)])
            lines += _section(
                "nvlink", 0, [line for i, gpu in enumerate(visible) for line in _nvlink_block(i, gpu, view)]
            )
            processes = [f"{gpu.uuid}, {workload_pid_of(gpu)}, python3" for gpu in visible] if busy else []
            lines += _section("processes", 0, processes)
            driver, cuda = gpus[0].model.driver, gpus[0].model.cuda
        lines += _section("versions", 0, [f"driver_version: {driver}", f"cuda_version: {cuda}"])
    else:
        lines += _section("gpus", 127, [NOT_INSTALLED])
    lines += _section("kernel", 0, kernel_lines(gpus, view))
    lines += _section("dcgm", 127, ["not installed"])
    lines += _section("workload", 0, workload)
    lines.append("### end")
    return "\n".join(lines) + "\n"


def workload_pid_of(gpu: SimGpu) -> int:
    """The pid of the workload's process on one GPU (one process per GPU, as torchrun starts them)."""
    return 2000 + _digest(gpu.uuid, "pid") % 60000


# -- nvidia-smi -r ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetResult:
    rc: int
    stdout: str = ""
    stderr: str = ""
    reset_slots: frozenset[int] = frozenset()


def reset_gpus(gpus: list[SimGpu], view: GpuView, *, busy: bool, which: object = "all") -> ResetResult:
    """What `nvidia-smi -r` answers; ``which``: "all" or a list of (visible) GPU indices;
    ``reset_slots`` are the GPUs it reset (cures apply to them)."""
    if not gpus:
        return ResetResult(127, stderr=f"{NOT_INSTALLED}\n")
    if view.no_driver:
        return ResetResult(NO_DRIVER_RC, stdout=f"{NO_DRIVER}\n")
    visible = [gpu for gpu in gpus if not view.missing(gpu.slot)]
    if which != "all":
        try:
            wanted = {int(index) for index in which}  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            return ResetResult(2, stderr=f"{BAD_ARGUMENTS}\n")
        visible = [gpu for index, gpu in enumerate(visible) if index in wanted]
    if not visible:
        return ResetResult(NO_DEVICES_RC, stdout=f"{NO_DEVICES}\n")
    if busy:
        gpu = visible[0]
        return ResetResult(
            3, stderr=f"GPU {gpu.bus_id} is in use by pid {workload_pid_of(gpu)}; stop the workload first\n"
        )
    done = [f"GPU {gpu.bus_id} was successfully reset." for gpu in visible]
    return ResetResult(0, stdout="\n".join([*done, "All done."]) + "\n", reset_slots=frozenset(g.slot for g in visible))
