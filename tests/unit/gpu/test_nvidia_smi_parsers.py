"""nvidia-smi's answers as real GPUs printed them (the shared captures), and as sick GPUs print them."""

from __future__ import annotations

import pytest

from restarter.domain.gpu.nvidia_smi import (
    QUERY_FIELDS,
    decode_throttle_reasons,
    parse_nvlink_status,
    parse_query_csv,
    parse_query_xml,
    pci_key,
)
from restarter.domain.gpu.report import GpuExpectation, assess_node, parse_health_output
from tests.conftest import SHARED_DATA

SMI = SHARED_DATA / "nvidia-smi"
H100 = SMI / "gpuexporter_capture_H100-80GB-HBM3_590.48.01.txt"
A100_XML = SMI / "telegraf_nvidia-smi-q-x_A100-SXM4-80GB_535.xml"
K80_XML = SMI / "openpai_nvidia-smi-q-x_4x-Tesla-K80_retired-pages.xml"


def _capture_blocks(command_prefix: str) -> list[str]:
    """The output under each `# $ <command>` header of the H100 capture (up to the next blank line)."""
    lines = H100.read_text().splitlines()
    blocks = []
    for at, line in enumerate(lines):
        if line.startswith(f"# $ {command_prefix}"):
            body = []
            for out in lines[at + 2 :]:  # the header's closing ##### line comes first
                if not out.strip():
                    break
                body.append(out)
            blocks.append("\n".join(body))
    return blocks


def test_every_shared_capture_is_covered_here() -> None:
    assert {path.name for path in SMI.iterdir()} == {H100.name, A100_XML.name, K80_XML.name}


@pytest.mark.parametrize(
    ("phase", "temperature", "power", "throttle"),
    [(0, 41.0, 69.85, ["gpu_idle"]), (1, 59.0, 631.95, [])],
    ids=["idle", "load"],
)
def test_the_h100_capture_csv_with_a_header_and_units_is_read_by_name(
    phase: int, temperature: float, power: float, throttle: list[str]
) -> None:
    # given the exporter's --query-gpu CSV (212 fields, a header with units such as `power.draw [W]`)
    blocks = _capture_blocks("nvidia-smi --query-gpu=")
    assert len(blocks) == 2

    # when it is parsed
    (gpu,) = parse_query_csv(blocks[phase])

    # then our fields are found wherever they are, N/A reads as None, and the line is kept as evidence
    assert (gpu.index, gpu.name, gpu.pci_bus_id) == (0, "NVIDIA H100 80GB HBM3", "00000000:00:09.0")
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert (gpu.ecc_volatile_uncorrected, gpu.ecc_aggregate_uncorrected) == (0, 0)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (False, False)
    assert (gpu.retired_pages, gpu.retired_pages_pending) == (None, None)  # `[N/A]` on an H100
    assert (gpu.temperature_c, gpu.power_w, gpu.throttle_reasons) == (temperature, power, throttle)
    assert gpu.raw == blocks[phase].splitlines()[1].strip()


def test_the_h100_capture_nvlink_status_has_eighteen_active_links() -> None:
    (block,) = _capture_blocks("nvidia-smi nvlink -s")
    links = parse_nvlink_status(block)
    assert list(links) == [0]
    assert [link.link for link in links[0]] == list(range(18))
    assert all(link.active and link.speed_gbps == 26.562 for link in links[0])


def test_the_a100_xml_of_dtd_v12_reads_not_applicable_memory_fields_as_unknown() -> None:
    # given a driver 535 `-q -x` of one A100 in MIG mode (remapped_rows and retired pages `N/A`)
    (gpu,) = parse_query_xml(A100_XML.read_text())

    assert (gpu.index, gpu.name, gpu.pci_bus_id) == (0, "NVIDIA A100-SXM4-80GB", "00000000:01:00.0")
    assert gpu.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert (gpu.ecc_volatile_uncorrected, gpu.ecc_aggregate_uncorrected) == (0, 0)  # the GPU's, not its MIG slices'
    assert (gpu.retired_pages, gpu.retired_pages_pending) == (None, None)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (None, None)
    assert (gpu.temperature_c, gpu.power_w, gpu.throttle_reasons) == (27.0, 67.03, [])


def test_the_k80_xml_is_sorted_by_bus_id_and_reads_retired_pages_of_dtd_v10() -> None:
    # given a driver 430 `-q -x` of four K80 GPUs whose minor numbers run 1, 2, 3, 0
    gpus = parse_query_xml(K80_XML.read_text())

    # then they are numbered in PCI bus order, and GPU 0 is the one with minor number 1
    assert [gpu.pci_bus_id for gpu in gpus] == [
        "00001580:00:00.0",
        "00002DF7:00:00.0",
        "00004968:00:00.0",
        "0000F8D6:00:00.0",
    ]
    assert gpus[0].uuid == "GPU-c3b26f7a-8dcb-619c-fa1b-8029265a4db0" and "minor_number=1" in gpus[0].raw
    # and the first two carry 1 single-bit + 1 double-bit retired page each, with nothing pending
    assert [gpu.retired_pages for gpu in gpus] == [2, 2, 0, 0]
    assert [gpu.ecc_aggregate_uncorrected for gpu in gpus] == [7, 4, 0, 0]
    assert {gpu.retired_pages_pending for gpu in gpus} == {False}
    assert {gpu.ecc_volatile_uncorrected for gpu in gpus} == {0}
    assert gpus[0].throttle_reasons == ["applications_clocks_setting"]
    assert gpus[3].throttle_reasons == ["gpu_idle"]


def _xml_report(xml: str) -> str:
    """A report whose CSV query failed (rc 15), so the XML fallback is read."""
    return "\n".join(
        [
            "restarter-health: 2",
            "### section gpus rc=15",
            "Unable to determine the device handle",
            "### section gpus-xml rc=0",
            xml,
            "### end",
        ]
    )


def test_the_k80_retired_pages_stay_under_the_replacement_limit() -> None:
    assessment = assess_node("i-k80", parse_health_output(_xml_report(K80_XML.read_text())), GpuExpectation(4, "K80"))
    assert assessment.visible_gpus == 4
    assert assessment.findings == []


def test_a_k80_over_the_retired_page_limit_is_replaced_naming_the_gpu() -> None:
    # given the K80 capture with GPU 1 (bus 2DF7) at 40 single-bit + 30 double-bit retired pages
    xml = K80_XML.read_text()
    gpu_1 = xml.index('<gpu id="00002DF7:00:00.0">')
    head, tail = xml[:gpu_1], xml[gpu_1:]
    tail = tail.replace("<retired_count>1</retired_count>", "<retired_count>40</retired_count>", 1)
    tail = tail.replace("<retired_count>1</retired_count>", "<retired_count>30</retired_count>", 1)

    assessment = assess_node("i-k80", parse_health_output(_xml_report(head + tail)), GpuExpectation(4, None))

    (finding,) = assessment.findings
    assert (finding.code, finding.action, finding.gpu_index) == ("retired_pages_limit", "replace", 1)
    assert finding.pci_bus_id == "00002DF7:00:00.0" and "single_bit=40 double_bit=30" in finding.evidence
    assert "DCGM" in finding.source


OUR_LINE = (
    "0, 00000000:10:1C.0, GPU-4a2b, NVIDIA A100-SXM4-40GB, 1324020001234, "
    + "0, 0, No, No, No, 33, 52.10, 0x0000000000000001"
)


def test_our_noheader_line_is_read_in_query_fields_order() -> None:
    assert len(QUERY_FIELDS) == 13
    (gpu,) = parse_query_csv(OUR_LINE)
    assert (gpu.index, gpu.pci_bus_id, gpu.uuid, gpu.name, gpu.serial) == (
        0,
        "00000000:10:1C.0",
        "GPU-4a2b",
        "NVIDIA A100-SXM4-40GB",
        "1324020001234",
    )
    assert (gpu.retired_pages_pending, gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (False, False, False)
    assert (gpu.temperature_c, gpu.power_w, gpu.throttle_reasons, gpu.retired_pages) == (33.0, 52.1, ["gpu_idle"], None)


def test_unsupported_values_are_unknown_and_odd_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error",
            "1, 00000000:10:1D.0, GPU-5b, Tesla T4, [N/A], [N/A], N/A, [Not Supported], [N/A], [N/A], 40,"
            " [Unknown Error], [N/A]",
            "2, 00000000:10:1E.0, GPU-truncated",
            "x, 00000000:10:1F.0, GPU-6c, Tesla T4, 1, 0, 0, No, No, No, 40, 30.0, 0x0",
        ]
    )
    (gpu,) = parse_query_csv(text)
    assert gpu.index == 1 and gpu.serial is None
    assert (gpu.ecc_volatile_uncorrected, gpu.ecc_aggregate_uncorrected, gpu.retired_pages_pending) == (
        None,
        None,
        None,
    )
    assert (gpu.power_w, gpu.throttle_reasons) == (None, [])


def test_the_throttle_bitmask_is_named() -> None:
    assert decode_throttle_reasons("0x00000000000000E4") == [
        "sw_power_cap",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    ]
    assert decode_throttle_reasons("0x0000000000000008") == ["hw_slowdown"]
    assert decode_throttle_reasons("[N/A]") == decode_throttle_reasons("zz") == []


def test_ampere_xml_elements_for_remapped_rows_and_split_sram_counts_are_read() -> None:
    xml = """<nvidia_smi_log><gpu id="00000000:3B:00.0"><product_name>NVIDIA H100 80GB HBM3</product_name>
    <ecc_errors><volatile><sram_correctable>0</sram_correctable><sram_uncorrectable_parity>1</sram_uncorrectable_parity>
    <sram_uncorrectable_secded>2</sram_uncorrectable_secded><dram_uncorrectable>3</dram_uncorrectable></volatile></ecc_errors>
    <remapped_rows><remapped_row_corr>0</remapped_row_corr><remapped_row_unc>1</remapped_row_unc>
    <remapped_row_pending>Yes</remapped_row_pending><remapped_row_failure>No</remapped_row_failure></remapped_rows>
    <clocks_event_reasons><clocks_event_reason_hw_slowdown>Active</clocks_event_reason_hw_slowdown></clocks_event_reasons>
    </gpu></nvidia_smi_log>"""
    (gpu,) = parse_query_xml(xml)
    assert (gpu.ecc_volatile_uncorrected, gpu.ecc_aggregate_uncorrected) == (6, None)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (True, False)
    assert gpu.throttle_reasons == ["hw_slowdown"]


def test_xml_that_does_not_parse_gives_no_gpus() -> None:
    assert parse_query_xml("NVIDIA-SMI has failed <gpu") == []


def test_a_link_without_a_bandwidth_is_down() -> None:
    text = "\n".join(
        [
            "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-a)",
            "\t Link 0: 25 GB/s",
            "\t Link 1: <inactive>",
            "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-b)",
            "NVML: Unable to retrieve NVLink information as all links are inActive",
        ]
    )
    links = parse_nvlink_status(text)
    assert [(link.link, link.active, link.speed_gbps) for link in links[0]] == [(0, True, 25.0), (1, False, None)]
    assert links[1] == []


def test_pci_ids_of_the_kernel_log_and_of_nvidia_smi_match() -> None:
    assert pci_key("0000:3b:00") == pci_key("00000000:3B:00.0") == pci_key("PCI:0000:3b:00.0") == (0, 0x3B, 0)
    assert pci_key(None) is None and pci_key("garbage") is None
