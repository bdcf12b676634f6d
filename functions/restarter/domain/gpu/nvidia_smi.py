"""Reading nvidia-smi's answers: our own `--query-gpu` CSV, a CSV with a header line (other tools' captures,
units in the names), `nvidia-smi -q -x` XML across DTD versions, and `nvidia-smi nvlink --status`.

nvidia-smi prints odd things when a GPU is sick (`[Unknown Error]`, `Unable to determine the device
handle ...`, a truncated line). Nothing here raises on them: a line that cannot be read is skipped and a
value that cannot be read is None, so the rules can tell "no error" from "could not tell".
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "pci.bus_id",
    "uuid",
    "name",
    "serial",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "retired_pages.pending",
    "remapped_rows.pending",
    "remapped_rows.failure",
    "temperature.gpu",
    "power.draw",
    "clocks_throttle_reasons.active",
)

# nvidia-smi --help-query-gpu lists these as the same property under two names (newer drivers renamed
# "throttle" to "event"); the capture's header uses the left-hand ones.
FIELD_ALIASES: dict[str, str] = {
    "clocks_event_reasons.active": "clocks_throttle_reasons.active",
    "retired_pages.sbe": "retired_pages.single_bit_ecc.count",
    "retired_pages.dbe": "retired_pages.double_bit.count",
}
RETIRED_COUNT_FIELDS = ("retired_pages.single_bit_ecc.count", "retired_pages.double_bit.count")

# nvmlClocksEventReasons bits (nvml.h), named as nvidia-smi's XML names them.
THROTTLE_BITS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clocks_setting"),
)

_PCI = re.compile(r"(?:PCI:)?([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.([0-7]))?")
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*[A-Za-z%/]*")
_GPU_HEADER = re.compile(r"^\s*GPU (\d+):")
_LINK = re.compile(r"^\s*Link (\d+):\s*(.*?)\s*$")
_SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*GB/s")


class GpuSample(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    index: int
    pci_bus_id: str | None = None
    uuid: str | None = None
    name: str | None = None
    serial: str | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    retired_pages_pending: bool | None = None
    retired_pages: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    throttle_reasons: list[str] = []
    # What the values were read from (the CSV line, or the XML elements read): a finding's evidence.
    raw: str = ""


class NvLink(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    link: int
    # Only a bandwidth figure proves a link up: `<inactive>`, `N/A` or a status never seen are down.
    active: bool
    speed_gbps: float | None
    line: str


def pci_key(bus_id: str | None) -> tuple[int, int, int] | None:
    """(domain, bus, device): the Xid log's `0000:3b:00` and nvidia-smi's `00000000:3B:00.0` are one GPU."""
    match = _PCI.search(bus_id or "")
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16), int(match.group(3), 16)


def decode_throttle_reasons(mask: str | None) -> list[str]:
    value = _text(mask)
    if value is None:
        return []
    try:
        bits = int(value, 16)
    except ValueError:
        return []
    return [name for bit, name in THROTTLE_BITS if bits & bit]


def _text(value: str | None) -> str | None:
    """None for nvidia-smi's "cannot tell" answers: `[N/A]`, `N/A`, `[Not Supported]`, `[Unknown Error]`..."""
    if value is None:
        return None
    value = value.strip()
    if not value or value in {"N/A", "Not Supported", "Unknown Error"} or value.startswith("["):
        return None
    return value


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None and number == int(number) else None


def _float(value: str | None) -> float | None:
    match = _NUMBER.fullmatch(_text(value) or "")
    return float(match.group(1)) if match else None


def _bool(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get((_text(value) or "").lower())


def _field_name(header: str) -> str:
    name = re.sub(r"\s*\[[^\]]*\]\s*$", "", header.strip())  # `power.draw [W]` -> `power.draw`
    return FIELD_ALIASES.get(name, name)


def _sum(values: Iterable[int | None]) -> int | None:
    read = [value for value in values if value is not None]
    return sum(read) if read else None


def _sample_from_row(row: dict[str, str], raw: str) -> GpuSample | None:
    index = _int(row.get("index"))
    if index is None:
        return None
    return GpuSample(
        index=index,
        pci_bus_id=_text(row.get("pci.bus_id")),
        uuid=_text(row.get("uuid")),
        name=_text(row.get("name")),
        serial=_text(row.get("serial")),
        ecc_volatile_uncorrected=_int(row.get("ecc.errors.uncorrected.volatile.total")),
        ecc_aggregate_uncorrected=_int(row.get("ecc.errors.uncorrected.aggregate.total")),
        retired_pages_pending=_bool(row.get("retired_pages.pending")),
        retired_pages=_sum(_int(row.get(name)) for name in RETIRED_COUNT_FIELDS),
        remapped_rows_pending=_bool(row.get("remapped_rows.pending")),
        remapped_rows_failure=_bool(row.get("remapped_rows.failure")),
        temperature_c=_float(row.get("temperature.gpu")),
        power_w=_float(row.get("power.draw")),
        throttle_reasons=decode_throttle_reasons(row.get("clocks_throttle_reasons.active")),
        raw=raw,
    )


def parse_query_csv(text: str) -> list[GpuSample]:
    """Rows of `--query-gpu`: without a header they are QUERY_FIELDS in order (our health script's
    `noheader,nounits`); with one (the first line naming a known field) columns are matched by name, so
    any field order or extra fields work and unit suffixes are ignored."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    fields: list[str] = list(QUERY_FIELDS)
    first = [_field_name(cell) for cell in next(csv.reader([lines[0]], skipinitialspace=True))]
    if "index" in first or "name" in first or "pci.bus_id" in first:
        fields, lines = first, lines[1:]
    samples: list[GpuSample] = []
    for line in lines:
        cells = next(csv.reader([line], skipinitialspace=True), [])
        if len(cells) != len(fields):
            continue  # an error message or a truncated row
        sample = _sample_from_row(dict(zip(fields, cells, strict=True)), line.strip())
        if sample is not None:
            samples.append(sample)
    return samples


def _xml_text(element: ET.Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path)
    return None if found is None or found.text is None else found.text.strip()


def _uncorrected(counts: ET.Element | None) -> int | None:
    """Uncorrectable ECC errors in one `<volatile>`/`<aggregate>` block: DTDs up to v10 have
    `double_bit/total`; v11+ split DRAM from SRAM, and newer drivers split SRAM into parity/SECDED."""
    if counts is None:
        return None
    if counts.find("double_bit") is not None:
        return _int(_xml_text(counts, "double_bit/total"))
    sram = _int(_xml_text(counts, "sram_uncorrectable"))
    if sram is None:
        sram = _sum(_int(_xml_text(counts, tag)) for tag in ("sram_uncorrectable_parity", "sram_uncorrectable_secded"))
    return _sum([sram, _int(_xml_text(counts, "dram_uncorrectable"))])


def _xml_throttle(gpu: ET.Element) -> list[str]:
    reasons: list[str] = []
    for block, prefix in (
        ("clocks_event_reasons", "clocks_event_reason_"),
        ("clocks_throttle_reasons", "clocks_throttle_reason_"),
    ):
        element = gpu.find(block)
        for child in [] if element is None else list(element):
            if child.tag.startswith(prefix) and (child.text or "").strip() == "Active":
                reasons.append(child.tag.removeprefix(prefix))
    return reasons


def _sample_from_xml(index: int, gpu: ET.Element) -> GpuSample:
    bus = gpu.get("id") or _xml_text(gpu, "pci/pci_bus_id")
    ecc = gpu.find("ecc_errors")
    retired = gpu.find("retired_pages")
    single = _int(_xml_text(retired, "multiple_single_bit_retirement/retired_count"))
    double = _int(_xml_text(retired, "double_bit_retirement/retired_count"))
    # v11+ name it pending_retirement; driver 430's v10 only has pending_blacklist.
    pending_text = _xml_text(retired, "pending_retirement")
    pending = _bool(pending_text) if _text(pending_text) else _bool(_xml_text(retired, "pending_blacklist"))
    remapped = gpu.find("remapped_rows")  # `N/A` text on GPUs before Ampere, elements from Ampere on
    remap_pending = _bool(_xml_text(remapped, "remapped_row_pending"))
    remap_failure = _bool(_xml_text(remapped, "remapped_row_failure"))
    readings = ("gpu_power_readings/power_draw", "power_readings/power_draw", "gpu_power_readings/average_power_draw")
    power = next((watts for path in readings if (watts := _float(_xml_text(gpu, path))) is not None), None)
    volatile = _uncorrected(None if ecc is None else ecc.find("volatile"))
    raw = (
        f"<gpu id={bus}> product_name={_xml_text(gpu, 'product_name')} minor_number={_xml_text(gpu, 'minor_number')}"
        f" ecc_errors.volatile.uncorrectable={volatile} retired_pages: single_bit={single} double_bit={double}"
        f" pending={pending} remapped_rows: pending={remap_pending} failure={remap_failure}"
    )
    return GpuSample(
        index=index,
        pci_bus_id=_text(bus),
        uuid=_text(_xml_text(gpu, "uuid")),
        name=_text(_xml_text(gpu, "product_name")),
        serial=_text(_xml_text(gpu, "serial")),
        ecc_volatile_uncorrected=volatile,
        ecc_aggregate_uncorrected=_uncorrected(None if ecc is None else ecc.find("aggregate")),
        retired_pages_pending=pending,
        retired_pages=_sum([single, double]),
        remapped_rows_pending=remap_pending,
        remapped_rows_failure=remap_failure,
        temperature_c=_float(_xml_text(gpu, "temperature/gpu_temp")),
        power_w=power,
        throttle_reasons=_xml_throttle(gpu),
        raw=raw,
    )


def parse_query_xml(text: str) -> list[GpuSample]:
    """`nvidia-smi -q -x`. The XML has no index and lists GPUs in no promised order (the K80 capture's
    minor numbers run 1, 2, 3, 0), so GPUs are sorted by PCI bus id and numbered in that order, which is
    the order nvidia-smi itself numbers them in; minor_number (the /dev/nvidiaN number) is not the index."""
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError:
        return []
    gpus = root.findall("gpu")
    ordered = sorted(
        gpus, key=lambda gpu: pci_key(gpu.get("id") or _xml_text(gpu, "pci/pci_bus_id")) or (1 << 40, 0, 0)
    )
    return [_sample_from_xml(index, gpu) for index, gpu in enumerate(ordered)]


def nvlink_blocks(text: str) -> dict[int, list[str]]:
    """Each GPU's lines of `nvidia-smi nvlink --status`, its `GPU N: ...` header first."""
    blocks: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = _GPU_HEADER.match(line)
        if header:
            current = blocks.setdefault(int(header.group(1)), [])
        if current is not None and line.strip():
            current.append(line.strip())
    return blocks


def parse_nvlink_status(text: str) -> dict[int, list[NvLink]]:
    """Links per GPU index. A GPU whose block has no link line (`... all links are inActive`) maps to []."""
    links: dict[int, list[NvLink]] = {}
    for index, lines in nvlink_blocks(text).items():
        links[index] = []
        for line in lines:
            match = _LINK.match(line)
            if match:
                speed = _SPEED.search(match.group(2))
                links[index].append(
                    NvLink(
                        link=int(match.group(1)),
                        active=speed is not None,
                        speed_gbps=float(speed.group(1)) if speed else None,
                        line=line,
                    )
                )
    return links
