"""The health script the EC2 adapter sends is real bash: run it against stand-in `nvidia-smi`
and `docker` binaries and read its report with the domain parser, so that what the node
prints and what restarter reads cannot drift apart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from restarter.adapters.ec2_provider import _script
from restarter.domain.gpu.report import GpuExpectation, assess_node, parse_health_output

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *query-gpu=driver_version*) echo "535.54.03";;
  *query-gpu=*) echo "0, 00000000:10:1C.0, GPU-1, NVIDIA A100-SXM4-40GB, 1, 0, 0, No, {pending}, No, 33, 52.10, 0x1";;
  *nvlink*) printf 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\\n\\t Link 0: 25 GB/s\\n';;
  *query-compute-apps*) ;;
  "") echo "| NVIDIA-SMI 535.54.03    Driver Version: 535.54.03    CUDA Version: 12.2 |";;
esac
"""
DOCKER = '#!/bin/sh\necho "running tensorone/pytorch:2.1"\n'
ARGS = {"ports": [{"internal_port": 8888, "external_port": 30888, "protocol": "udp"}], "expected_gpus": 1}


def run_health_script(tmp_path: Path, binaries: dict[str, str]) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in binaries.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    script = tmp_path / "health.sh"
    script.write_text("\n".join(_script("health_check", ARGS)) + "\n")
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_given_a_healthy_gpu_when_the_script_runs_then_its_report_reads_as_ready(tmp_path: Path) -> None:
    stdout = run_health_script(tmp_path, {"nvidia-smi": NVIDIA_SMI.format(pending="No"), "docker": DOCKER})

    assessment = assess_node("i-1", parse_health_output(stdout), GpuExpectation(count=1, model="A100"))

    assert assessment.ready and assessment.findings == []
    assert assessment.visible_gpus == 1 and assessment.gpus[0].uuid == "GPU-1"
    assert (assessment.driver_version, assessment.cuda_version, assessment.dcgm) == (
        "535.54.03",
        "12.2",
        "not installed",
    )
    assert "container: running tensorone/pytorch:2.1" in stdout


def test_given_a_pending_row_remap_when_the_script_runs_then_the_report_asks_for_a_reboot(tmp_path: Path) -> None:
    stdout = run_health_script(tmp_path, {"nvidia-smi": NVIDIA_SMI.format(pending="Yes"), "docker": DOCKER})

    assessment = assess_node("i-1", parse_health_output(stdout), GpuExpectation(count=1, model="A100"))

    assert [(f.code, f.action) for f in assessment.findings] == [("row_remap_pending", "reboot")]


def test_given_a_node_without_nvidia_smi_when_the_script_runs_then_it_answers_no_driver(tmp_path: Path) -> None:
    stdout = run_health_script(tmp_path, {"docker": DOCKER})

    assessment = assess_node("i-1", parse_health_output(stdout), GpuExpectation(count=8, model="A100"))

    assert not assessment.ready
    assert "no_driver" in [f.code for f in assessment.findings]
    assert stdout.rstrip().endswith("### end")


NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
FAILING_DRIVER = f'#!/bin/sh\necho "{NO_DRIVER}"\nexit 9\n'  # what nvidia-smi says without its driver


def test_given_a_driver_that_does_not_answer_when_the_script_runs_then_no_driver_and_no_version(
    tmp_path: Path,
) -> None:
    stdout = run_health_script(tmp_path, {"nvidia-smi": FAILING_DRIVER, "docker": DOCKER})

    assessment = assess_node("i-1", parse_health_output(stdout), GpuExpectation(count=8, model="A100"))

    assert "no_driver" in [f.code for f in assessment.findings] and not assessment.ready
    assert assessment.driver_version is None and assessment.cuda_version is None


def test_given_an_xid_in_the_kernel_log_since_boot_when_the_script_runs_then_it_is_a_finding(tmp_path: Path) -> None:
    line = (
        "[6781741.548779] NVRM: Xid (PCI:0000:10:1c): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    )
    journal = f"#!/bin/sh\necho 'kernel: unrelated line'\necho \"{line}\"\n"
    stdout = run_health_script(
        tmp_path, {"nvidia-smi": NVIDIA_SMI.format(pending="No"), "docker": DOCKER, "journalctl": journal}
    )

    assessment = assess_node("i-1", parse_health_output(stdout), GpuExpectation(count=1, model="A100"))

    (finding,) = assessment.findings
    assert (finding.code, finding.action, finding.gpu_index) == ("xid_79", "reboot", 0)
    assert finding.evidence == line and "unrelated" not in stdout
