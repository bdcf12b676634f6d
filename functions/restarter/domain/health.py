"""Whether the workload answers: the health report's `workload` section.

The section is one fact per line: `container: running <image>` (or `exited <image>`,
`missing`) and `port: tcp/30888 open|closed`, each port probed where clients connect (the host
port docker publishes). The GPUs themselves are judged by `restarter.domain.gpu`.
"""

from __future__ import annotations

from restarter.domain.models import PortMapping


def workload_problems(section: str, *, expected_image: str, ports: list[PortMapping]) -> list[str]:
    """What is wrong with the workload: the container's state or image, and the ports that do not answer."""
    facts: dict[str, list[str]] = {}
    for line in section.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            facts.setdefault(key.strip(), []).append(value.strip())

    problems: list[str] = []
    container = ((facts.get("container") or ["missing"])[0].split()) or ["missing"]
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
    return problems
