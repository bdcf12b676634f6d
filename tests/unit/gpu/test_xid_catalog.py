"""Xid lines as real drivers print them, read and classified by the catalog's buckets and workflows."""

from __future__ import annotations

import re

import pytest

from restarter.domain.gpu.findings import Finding, worst_action
from restarter.domain.gpu.xid import XID_TABLE, classify_xids, parse_xid_lines
from tests.conftest import SHARED_DATA

XID_DATA = SHARED_DATA / "xid"


def _tsv_rows() -> list[tuple[str, int, str]]:
    rows = []
    for row in (XID_DATA / "xid_lines_from_test_fixtures.tsv").read_text().splitlines():
        if row and not row.startswith("#"):
            _repo, path, _commit, line_no, line = row.split("\t")
            rows.append((path.rsplit("/", 1)[-1], int(line_no), line))
    return rows


# What each shared fixture line must become: (code, action, PCI id as printed).
EXPECTED = {
    ("kmsg_test.go", 34): ("xid_79", "reboot", "0000:05:00"),
    ("kmsg_test.go", 176): ("xid_154", "reset_gpu", "0009:01:00"),  # to 0x4 Drain and Reset
    ("kmsg_test.go", 190): ("xid_154", "reset_gpu", "0019:01:00"),  # to 0x1 GPU Reset Required
    ("kmsg_test.go", 204): ("xid_149", "reset_gpu", "0009:01:00"),  # NVLink5 Fatal
    ("kmsg_test.go", 218): ("xid_154", "reset_gpu", "0018:01:00"),
    ("README.md", 11): ("xid_79", "reboot", "0000:91:00"),
    ("csv_test.go", 66): ("xid_13", "report", "0000:b5:00"),
    ("csv_test.go", 88): ("xid_74", "reboot", "0003:00:00"),  # "fatal error detected on link 14"
    ("csv_test.go", 130): ("xid_69", "report", "0001:ab:cd"),
    ("xid_handler_test.go", 713): ("xid_145", "report", "0000:00:08.0"),  # Nonfatal, function number
    ("014-workflow-XID-13-and-31.md", 43): ("xid_13", "report", "0002:00:00"),
    ("014-workflow-XID-13-and-31.md", 352): ("xid_13", "report", "0009:01:00"),  # no pid/name
    ("syslog_health_monitor_test.go", 83): ("xid_119", "reset_gpu", "0002:00:00"),
    ("syslog_health_monitor_test.go", 213): ("xid_31", "report", "0001:00:00"),
    ("syslog_health_monitor_test.go", 219): ("xid_145", "report", "0002:00:00"),
    ("syslog_health_monitor_test.go", 271): ("xid_119", "reset_gpu", "0000:17:00"),
}
ROWS = _tsv_rows()


def test_every_shared_fixture_line_has_an_expectation() -> None:
    assert len(ROWS) == 16
    assert {(path, line_no) for path, line_no, _ in ROWS} == set(EXPECTED)


@pytest.mark.parametrize(("path", "line_no", "line"), ROWS, ids=[f"{p}:{n}" for p, n, _ in ROWS])
def test_a_shared_fixture_line_is_one_finding_with_its_class_and_line(path: str, line_no: int, line: str) -> None:
    # given one Xid line copied from a public test fixture
    code, action, pci = EXPECTED[(path, line_no)]

    # when it is read and classified
    findings = classify_xids(parse_xid_lines(line))

    # then it is one finding, of the expected class, quoting the line
    assert len(findings) == 1, findings
    finding = findings[0]
    assert (finding.code, finding.action, finding.pci_bus_id) == (code, action, pci)
    assert finding.evidence == line.strip()
    assert finding.count == 1
    assert finding.xid == int(code.removeprefix("xid_"))
    assert finding.catalog_bucket == XID_TABLE[finding.xid].bucket
    assert finding.source.startswith("NVIDIA Xid catalog")


def test_the_gpud_dmesg_burst_of_xid_119_is_one_finding_counted_five_times() -> None:
    # given the gpud dmesg capture: five Xid 119 lines on one GPU among stack traces and RPC history
    text = (XID_DATA / "gpud_dmesg-with-xid-119.log").read_text()
    first = next(line for line in text.splitlines() if "NVRM: Xid" in line)

    # when it is classified
    findings = classify_xids(parse_xid_lines(text))

    # then there is one GSP timeout finding: reset the GPU, five times seen, the first line as evidence
    assert [(f.code, f.action, f.count, f.pci_bus_id) for f in findings] == [("xid_119", "reset_gpu", 5, "0000:9b:00")]
    assert findings[0].evidence == first.strip()
    assert findings[0].catalog_bucket == "RESET_GPU"


def test_the_table_covers_every_xid_of_the_catalog_notes_with_its_mnemonic_and_bucket() -> None:
    # given the catalog's table as our notes copy it
    notes = (XID_DATA / "XID_CATALOG_NOTES.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| [^|]+ \| [^|]+ \| ([^|]+) \|", notes, re.MULTILINE)
    assert len(rows) >= 30

    # then each of its Xids has a row with the same mnemonic and immediate-action bucket
    for xid, mnemonic, bucket in rows:
        rule = XID_TABLE[int(xid)]
        assert rule.mnemonic in mnemonic, xid
        assert rule.bucket == bucket.strip(), xid


@pytest.mark.parametrize(
    ("line", "pci", "pid", "name"),
    [
        (
            "NVRM: Xid (PCI:0000:3b:00): 62, pid=4242, name=python3, Internal micro-controller halt",
            "0000:3b:00",
            4242,
            "python3",
        ),
        (
            "[123.456] NVRM: Xid (PCI:0000:3b:00): 62, pid='<unknown>', name=<unknown>, halt",
            "0000:3b:00",
            None,
            "<unknown>",
        ),
        ("kernel: [16.4] NVRM: Xid (PCI:0000:3b:00): 62, halt without pid or name", "0000:3b:00", None, None),
        ("[Sun Feb 23 16:24:18 2025] NVRM: Xid (PCI:0000:00:08.0): 62, halt", "0000:00:08.0", None, None),
        (
            "Mar  1 10:00:00 host kernel: NVRM: Xid (0000:03:00): 62, an old driver without PCI:",
            "0000:03:00",
            None,
            None,
        ),
    ],
    ids=["pid-and-name", "unknown-pid", "no-pid-no-name", "function-number", "old-form"],
)
def test_every_line_form_is_read(line: str, pci: str, pid: int | None, name: str | None) -> None:
    events = parse_xid_lines(line)
    assert [(e.xid, e.pci_bus_id, e.pid, e.process_name) for e in events] == [(62, pci, pid, name)]
    assert events[0].line == line


def test_lines_that_are_not_xids_are_skipped() -> None:
    text = "NVRM: GPU at PCI:0000:9b:00: GPU-509665ad\nNVRM: Xid (garbage)\nrandom words\n\n"
    assert parse_xid_lines(text) == []


def test_fallen_off_the_bus_without_an_xid_prefix_is_xid_79() -> None:
    line = "[ 99.1] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."
    findings = classify_xids(parse_xid_lines(line))
    assert [(f.code, f.action, f.pci_bus_id, f.evidence) for f in findings] == [
        ("xid_79", "reboot", "0000:3b:00.0", line.strip())
    ]


def test_a_fallen_off_line_folds_into_the_xid_79_of_the_same_gpu() -> None:
    xid_line = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    text = f"{xid_line}\nNVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."
    findings = classify_xids(parse_xid_lines(text))
    assert [(f.code, f.count, f.evidence) for f in findings] == [("xid_79", 1, xid_line)]


def _line(xid: int, text: str, pci: str = "0000:3b:00") -> str:
    return f"NVRM: Xid (PCI:{pci}): {xid}, pid='<unknown>', name=<unknown>, {text}"


def _classify(*lines: str) -> dict[int | None, Finding]:
    return {f.xid: f for f in classify_xids(parse_xid_lines("\n".join(lines)))}


@pytest.mark.parametrize(
    ("xid", "action"),
    [
        (8, "report"),
        (43, "report"),
        (62, "reset_gpu"),
        (64, "reset_gpu"),
        (79, "reboot"),
        (94, "report"),
        (158, "reset_gpu"),
    ],
)
def test_a_plain_bucket_decides_the_action(xid: int, action: str) -> None:
    (finding,) = classify_xids(parse_xid_lines(_line(xid, "some text")))
    assert finding.action == action


def test_a_burst_on_one_gpu_is_one_finding_but_another_gpu_is_another() -> None:
    lines = [_line(119, "timeout")] * 3 + [_line(119, "timeout", pci="0000:3c:00")]
    findings = classify_xids(parse_xid_lines("\n".join(lines)))
    assert sorted((f.pci_bus_id, f.count) for f in findings) == [("0000:3b:00", 3), ("0000:3c:00", 1)]


def test_xid_48_alone_resets_the_gpu_and_with_63_drains_first() -> None:
    alone = _classify(_line(48, "DBE"))[48]
    with_63 = _classify(_line(48, "DBE"), _line(63, "row remapping event"))[48]
    assert alone.action == "reset_gpu" and "drain" not in alone.summary.lower()
    assert with_63.action == "reset_gpu" and "drain the GPU, then reset" in with_63.summary


def test_xid_45_alone_asks_for_fabric_manager_and_with_others_follows_them() -> None:
    alone = _classify(_line(45, "preemptive cleanup"))[45]
    assert alone.action == "report" and "Fabric Manager" in alone.summary
    both = classify_xids(parse_xid_lines("\n".join([_line(45, "cleanup"), _line(79, "GPU has fallen off the bus.")])))
    xid_45 = next(f for f in both if f.xid == 45)
    assert xid_45.action == "report" and "follow the other Xid" in xid_45.summary
    assert worst_action(both) == "reboot"


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ("NVLink: fatal error detected on link 14(0x0, 0x0)", "reboot"),
        ("NVLink: non-fatal error detected on link 2(0x0, 0x0)", "report"),
        ("NVLink: error detected on link 2(0x0, 0x0)", "report"),
    ],
)
def test_xid_74_reboots_only_for_a_fatal_link_error(message: str, action: str) -> None:
    assert _classify(_line(74, message))[74].action == action


@pytest.mark.parametrize(("token", "action"), [("Fatal", "reset_gpu"), ("Nonfatal", "report")])
def test_nvlink5_errors_follow_their_fatal_token(token: str, action: str) -> None:
    # given Xid 144-150 lines with the token (their full decode is out of scope)
    for xid in range(144, 151):
        finding = _classify(_line(xid, f"SAW_MVB {token} XC0 i0 Link 01 (0x1 0x0 0x0 0x0 0x0 0x0)"))[xid]
        assert finding.action == action, xid
        assert "out of scope" in finding.source


@pytest.mark.parametrize(
    ("code", "text", "action"),
    [
        ("0x0", "None", "report"),
        ("0x1", "GPU Reset Required", "reset_gpu"),
        ("0x2", "Node Reboot Required", "reboot"),
        ("0x3", "Drain P2P", "reset_gpu"),
        ("0x4", "Drain and Reset", "reset_gpu"),
    ],
)
def test_xid_154_follows_the_recovery_action_it_announces(code: str, text: str, action: str) -> None:
    finding = _classify(_line(154, f"GPU recovery action changed from 0x4 (Drain and Reset) to {code} ({text})"))[154]
    assert finding.action == action
    assert text in finding.summary


@pytest.mark.parametrize("xid", [13, 31])
def test_a_repeated_xid_13_or_31_is_still_a_report_but_asks_for_dcgm_diagnostics(xid: int) -> None:
    once = _classify(_line(xid, "Graphics Exception"))[xid]
    thrice = _classify(*[_line(xid, "Graphics Exception")] * 3)[xid]
    assert once.action == thrice.action == "report"
    assert "DCGM" not in once.summary
    assert thrice.count == 3 and "run DCGM diagnostics" in thrice.summary


def test_an_unknown_xid_is_reported_without_a_bucket() -> None:
    (finding,) = classify_xids(parse_xid_lines(_line(999, "something new")))
    assert (finding.code, finding.action, finding.catalog_bucket) == ("xid_999", "report", None)
    assert "not in the table" in finding.summary
