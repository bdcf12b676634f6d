"""The cure rules of the simulated GPU faults (``restarter_local.moto_ext.gpu_sim``): each fault is
cured by the recovery rung NVIDIA's Xid catalog and memory-error guide name for it, or a stronger one
(reset_gpu < reboot < stop_start); some by none. What the rungs do through EC2 and SSM is tested in
test_simulated_gpu_faults.py beside this file.
"""

from __future__ import annotations

import pytest

from restarter_local.moto_ext.gpu_sim import RUNGS, GpuFault, Rung, after_rung, weakest_cure

CURE_TABLE: list[tuple[GpuFault, Rung | None]] = [
    *(
        (GpuFault("xid", xid=x), "reset_gpu")
        for x in (48, 62, 64, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158)
    ),
    (GpuFault("xid", xid=74), "reboot"),
    (GpuFault("xid", xid=79), "stop_start"),
    *((GpuFault("xid", xid=x), None) for x in (8, 13, 31, 32, 43, 45, 63, 68, 69, 92, 94, 999)),
    (GpuFault("ecc_dbe"), "reset_gpu"),
    (GpuFault("row_remap_pending"), "reset_gpu"),
    (GpuFault("row_remap_failure"), None),
    (GpuFault("gpu_missing"), "stop_start"),
    (GpuFault("gpu_missing", late_seconds=60), None),
    (GpuFault("nvlink_down"), "reboot"),
    (GpuFault("no_driver"), None),
]


def fault_id(fault: GpuFault | None) -> str:
    if fault is None:
        return "healthy"
    return f"{fault.kind}{fault.xid or ''}{'-late' if fault.late_seconds else ''}"


def cured_by(fault: GpuFault, rung: Rung) -> bool:
    """A fresh copy of ``fault`` is gone (or only a residue is left) after ``rung``."""
    left = after_rung([GpuFault(fault.kind, xid=fault.xid, late_seconds=fault.late_seconds)], rung)
    return not left or left[0].residue


@pytest.mark.parametrize(("fault", "weakest"), CURE_TABLE, ids=[fault_id(f) for f, _ in CURE_TABLE])
def test_each_fault_is_cured_by_its_catalog_rung_or_a_stronger_one(fault: GpuFault, weakest: Rung | None) -> None:
    # given the fault, when each rung runs on its own
    cured = {rung: cured_by(fault, rung) for rung in RUNGS}
    # then exactly the rungs from the weakest cure up cure it
    assert weakest_cure(fault) == weakest
    assert cured == {rung: weakest is not None and RUNGS.index(rung) >= RUNGS.index(weakest) for rung in RUNGS}


def test_a_cured_ecc_error_leaves_its_aggregate_count_until_a_new_host() -> None:
    # given a double-bit ECC error on GPU 0 and a pending remap on GPU 1
    faults = [GpuFault("ecc_dbe", gpu=0), GpuFault("row_remap_pending", gpu=1)]
    # when GPU 0 alone is reset
    left = after_rung(faults, "reset_gpu", {0})
    # then GPU 0's error is a residue (the InfoROM's aggregate count) and GPU 1's remap still pending
    assert [(f.kind, f.residue) for f in left] == [("ecc_dbe", True), ("row_remap_pending", False)]
    # and a stop and start (a new host) leaves nothing of either
    assert after_rung(left, "stop_start") == []


def test_an_uncured_boot_is_remembered_and_a_reset_is_not_a_boot() -> None:
    # given Xid 79 and an application Xid
    faults = [GpuFault("xid", xid=79), GpuFault("xid", gpu=1, xid=13)]
    # when a reset, then a reboot run
    after_reset = after_rung(faults, "reset_gpu")
    booted = [f.booted for f in after_reset]
    after_reboot = after_rung(after_reset, "reboot")
    # then both survive; only the reboot counts as a boot (Xid 79's line is then gone, the GPU still lost)
    assert booted == [False, False]
    assert [(f.xid, f.booted) for f in after_reboot] == [(79, True), (13, True)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "xid"}, "`xid` is required"),
        ({"kind": "ecc_dbe", "xid": 48}, "`xid` is required for an xid fault and only for it"),
        ({"kind": "xid", "xid": 79, "late_seconds": 5}, "`late_seconds`"),
        ({"kind": "gpu_missing", "late_seconds": 0}, "`late_seconds`"),
        ({"kind": "nvlink_down", "gpu": -1}, "gpu must be >= 0"),
        ({"kind": "melted"}, "unknown GPU fault kind"),
    ],
)
def test_a_fault_that_cannot_be_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpuFault(**kwargs)  # type: ignore[arg-type]
