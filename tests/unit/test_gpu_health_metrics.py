"""Every stored health report publishes one EMF metric per finding class, so an operator can
alarm on "Xid 79 seen" (and per action: "a node needs a new host")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from restarter.domain.gpu.records import NodeHealthRecord
from restarter.domain.gpu.report import GpuExpectation, assess_node, parse_health_output
from restarter.observability import metrics
from restarter.services.gpu_health import store_reports
from tests.unit.fakes import InMemoryHealthStore

XID_79 = "[6781741.548779] NVRM: Xid (PCI:0000:91:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
CSV = "0, 00000000:10:1C.0, GPU-1, NVIDIA A100-SXM4-40GB, 1, 0, 0, No, No, No, 33, 52.10, 0x1"


@pytest.fixture
def emitted() -> Iterator[None]:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def report(kernel: str) -> NodeHealthRecord:
    text = "\n".join(
        ["restarter-health: 2", "### section gpus rc=0", CSV, "### section kernel rc=0", kernel, "### end"]
    )
    assessment = assess_node("i-1", parse_health_output(text), GpuExpectation(count=2, model="A100"))
    return NodeHealthRecord(
        cluster_id="c1",
        instance_id="i-1",
        taken_at="2026-12-03T10:00:00Z",
        source="health_check",
        assessment=assessment,
    )


def test_given_a_report_with_findings_when_stored_then_one_metric_per_finding_class(emitted: None) -> None:
    store = InMemoryHealthStore()

    store_reports(store, [report(XID_79)])  # type: ignore[arg-type]

    names = set(metrics.metric_set)
    assert {"GpuFinding_xid_79", "GpuFinding_gpu_missing", "GpuAction_reboot"} <= names
    assert store.report("c1", "i-1") is not None


def test_given_a_healthy_report_when_stored_then_no_finding_metric(emitted: None) -> None:
    healthy = report("")
    healthy.assessment = assess_node(
        "i-1",
        parse_health_output("restarter-health: 2\n### section gpus rc=0\n" + CSV + "\n### end\n"),
        GpuExpectation(count=1, model="A100"),
    )

    store_reports(None, [healthy])

    assert not [n for n in metrics.metric_set if n.startswith("Gpu")]
