"""Reading the health report an instance prints, and deciding whether it is healthy.

The report is the output of our health script (see the EC2 adapter), one fact per line:
`gpus: N`, `gpu: <nvidia-smi -L line>`, `container: running <image>`, `port: tcp/8080 open`,
`xid: <kernel line>`. A GPU node is healthy when every GPU it should have is visible, no
fatal Xid was logged, the workload container runs the expected image and every port answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from restarter.domain.models import PortMapping

# Xids that mean the GPU or its links need a reset or replacement (NVIDIA's Xid catalog).
FATAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 123, 140, 154})
XID_PATTERN = re.compile(r"NVRM: Xid \([^)]*\): (\d+)")


@dataclass(frozen=True)
class InstanceHealth:
    instance_id: str
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def evaluate_health_report(
    instance_id: str,
    report: str,
    *,
    expected_gpus: int,
    expected_image: str,
    ports: list[PortMapping],
) -> InstanceHealth:
    facts: dict[str, list[str]] = {}
    for line in report.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            facts.setdefault(key.strip(), []).append(value.strip())

    problems: list[str] = []
    seen_gpus = len(facts.get("gpu", []))
    if seen_gpus < expected_gpus:
        problems.append(f"expected {expected_gpus} GPUs, {seen_gpus} visible")
    for xid_line in facts.get("xid", []):
        match = XID_PATTERN.search(xid_line)
        if match and int(match.group(1)) in FATAL_XIDS:
            problems.append(f"fatal Xid {match.group(1)} logged")
    container = (facts.get("container") or ["missing"])[0].split()
    if container[0] != "running":
        problems.append(f"workload container {container[0]}")
    elif len(container) > 1 and container[1] != expected_image:
        problems.append(f"workload runs {container[1]}, expected {expected_image}")
    open_ports = set()
    for port_line in facts.get("port", []):
        spec, _, state = port_line.partition(" ")
        if state.strip() == "open":
            open_ports.add(spec)
    for mapping in ports:  # probed on the host port clients use
        spec = f"{mapping.protocol}/{mapping.external_port}"
        if spec not in open_ports:
            problems.append(f"port {spec} (container port {mapping.internal_port}) not answering")
    return InstanceHealth(instance_id=instance_id, problems=problems)
