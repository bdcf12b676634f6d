"""Real sample data for the simulated SSM agent (files in ``restarter/local/data``, see PROVENANCE.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
XID_TSV = DATA_DIR / "xid" / "xid_lines_from_test_fixtures.tsv"
H100_CAPTURE = DATA_DIR / "nvidia-smi" / "gpuexporter_capture_H100-80GB-HBM3_590.48.01.txt"
A100_XML = DATA_DIR / "nvidia-smi" / "telegraf_nvidia-smi-q-x_A100-SXM4-80GB_535.xml"

_XID_RE = re.compile(r"NVRM: Xid \(PCI:[0-9a-fA-F:.]+\): (\d+),")

# The default fatal Xid: Xid 79 "GPU has fallen off the bus", as quoted in gpud's sxid README.
_DEFAULT_XID_SOURCE = ("components/accelerator/nvidia/sxid/README.md", 11)


@dataclass(frozen=True)
class XidSample:
    """One kernel log line with an NVIDIA Xid, and where it was copied from."""

    xid: int
    line: str
    repo: str
    path: str
    line_no: int


@cache
def xid_samples() -> tuple[XidSample, ...]:
    """All Xid lines of the shared sample file, in file order."""
    samples: list[XidSample] = []
    for raw in XID_TSV.read_text(encoding="utf-8").splitlines():
        if not raw or raw.startswith("#"):
            continue
        repo, path, _commit, line_no, line = raw.split("\t", 4)
        match = _XID_RE.search(line)
        if match is None:
            continue
        samples.append(XidSample(int(match.group(1)), line, repo, path, int(line_no)))
    return tuple(samples)


def xid_line(xid: int) -> str:
    """The first sample kernel line for Xid ``xid`` (KeyError if the samples have none)."""
    for sample in xid_samples():
        if sample.xid == xid:
            return sample.line
    raise KeyError(f"no sample line for Xid {xid}")


@cache
def default_fatal_xid_line() -> str:
    """A real Xid 79 ("GPU has fallen off the bus") kernel line."""
    for sample in xid_samples():
        if (sample.path, sample.line_no) == _DEFAULT_XID_SOURCE:
            return sample.line
    return xid_line(79)


# `nvidia-smi -L` product names by (GpuInfo Name, memory MiB); memory None = any size.
# H100 80GB and A100 80GB are checked against the captures in data/nvidia-smi by the tests;
# the others are the names NVIDIA's driver reports for the GPUs EC2 lists.
NVIDIA_SMI_NAMES: dict[tuple[str, int | None], str] = {
    ("H100", None): "NVIDIA H100 80GB HBM3",
    ("H200", None): "NVIDIA H200",
    ("B200", None): "NVIDIA B200",
    ("A100", 81920): "NVIDIA A100-SXM4-80GB",
    ("A100", 40960): "NVIDIA A100-SXM4-40GB",
    ("A10G", None): "NVIDIA A10G",
    ("L4", None): "NVIDIA L4",
    ("L40S", None): "NVIDIA L40S",
    ("T4", None): "Tesla T4",
    ("T4g", None): "NVIDIA T4G",
    ("V100", 32768): "Tesla V100-SXM2-32GB",
    ("V100", 16384): "Tesla V100-SXM2-16GB",
}


def nvidia_smi_name(gpu: dict[str, Any]) -> str:
    """The ``nvidia-smi -L`` name of one ``GpuInfo.Gpus[]`` entry of DescribeInstanceTypes."""
    name = str(gpu.get("Name", "GPU"))
    memory = gpu.get("MemoryInfo", {}).get("SizeInMiB")
    for key in ((name, memory), (name, None)):
        if key in NVIDIA_SMI_NAMES:
            return NVIDIA_SMI_NAMES[key]
    return f"{gpu.get('Manufacturer', 'NVIDIA')} {name}"
