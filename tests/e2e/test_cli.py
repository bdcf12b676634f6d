"""The `restarter` API client commands against `restarter serve`: exit codes and JSON output.

(`invoke` and `demo` start their own embedded AWS: they are in test_cli_local.py, because
one process runs one embedded AWS at a time.)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from restarter_cli.main import main
from restarter_local.server import LocalServer

FLEET = """
clusters:
  - {id: cluster_abc123, name: ml-training-cluster, instance_type: g5.xlarge, instance_count: 2,
     ports: [{internal_port: 8888, external_port: 30888}]}
  - {id: cluster_bad001, name: eval-cluster, instance_type: g5.xlarge,
     ports: [{internal_port: 8888, external_port: 30888}]}
faults:
  - {kind: close_port, cluster_id: cluster_bad001, port: 8888}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    fleet.write_text(FLEET)
    with LocalServer(port=0, fleet=fleet, time_scale=600) as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def api_args(server: LocalServer) -> list[str]:
    return ["--url", server.base_url, "--api-key", server.api_key]


def test_clusters_lists_the_fleet_as_json(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "clusters", *api_args(server), "--json")
    assert code == 0
    assert [c["id"] for c in json.loads(out)] == ["cluster_abc123", "cluster_bad001"]


def test_json_output_is_only_json_when_the_lambdas_print_metrics(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the in-process Lambdas print Powertools' EMF metric lines (their log stream): on stderr
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    code, out, err = run(capsys, "restart", "cluster_abc123", *api_args(server), "--json", "--wait")
    assert code == 0
    assert json.loads(out)["status"] == "ready"
    assert '{"_aws"' in err


def test_clusters_prints_a_table(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "clusters", *api_args(server), "--status", "running")
    assert code == 0
    assert "ml-training-cluster" in out and "g5.xlarge" in out


def test_restart_with_wait_follows_progress_to_ready(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "restart", "cluster_abc123", *api_args(server), "--reason", "cli test", "--wait")
    assert code == 0, out
    assert "accepted (graceful)" in out
    assert "100%  ready" in out
    assert "ready" in out.splitlines()[-2] or "downtime" in out


def test_restart_json_then_status_watch(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "restart", "cluster_abc123", *api_args(server), "--force", "--json")
    assert code == 0
    restart_id = json.loads(out)["data"]["restart_id"]

    code, out, _ = run(capsys, "status", restart_id, *api_args(server), "--watch", "--json")

    assert code == 0
    final = json.loads(out)
    assert (final["id"], final["status"], final["restart_type"]) == (restart_id, "ready", "force")


def test_a_restart_that_ends_rolled_back_exits_1(
    server: LocalServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = tmp_path / "deploy.json"
    request.write_text(json.dumps({"update_docker_image": "tensorone/pytorch:2.3", "restart_reason": "deploy"}))

    code, out, _ = run(capsys, "restart", "cluster_bad001", *api_args(server), "--request", str(request), "--wait")

    assert code == 1
    assert "rolled_back" in out
    assert "error in health_checks: Health checks failed" in out


def test_a_refused_request_exits_2_with_the_error(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "restart", "cluster_abc123", *api_args(server), "--timeout", "99")
    assert code == 2
    assert "400 VALIDATION_ERROR" in err and "timeout_minutes" in err


def test_a_bad_key_exits_2_unauthorized(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "clusters", "--url", server.base_url, "--api-key", "rk_00000000_wrong")
    assert code == 2
    assert "401 UNAUTHORIZED" in err


def test_an_unknown_restart_exits_2_not_found(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "rst_0000000000000000", *api_args(server))
    assert code == 2
    assert "404 NOT_FOUND" in err


def test_an_unreachable_api_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run(capsys, "clusters", "--url", f"http://127.0.0.1:{port}/v1", "--api-key", "k")
    assert code == 3
    assert "cannot reach" in err


def test_environment_variables_configure_the_client(
    server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTARTER_URL", server.base_url)
    monkeypatch.setenv("RESTARTER_API_KEY", server.api_key)
    code, out, _ = run(capsys, "clusters", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_a_fault_injected_into_a_running_server_makes_the_next_restart_fail(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "fault",
        "fail_command",
        *api_args(server),
        "--cluster-id",
        "cluster_abc123",
        "--op",
        "start_services",
        "--times",
        "1",
    )
    assert code == 0 and out.strip() == "injected fail_command"

    code, out, _ = run(capsys, "restart", "cluster_abc123", *api_args(server), "--force", "--wait")

    assert code == 1
    assert "error in starting_services: Starting services failed" in out


def test_a_fault_naming_no_instance_is_refused(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "fault", "xid", *api_args(server), "--cluster-id", "cluster_nope")
    assert code == 2
    assert "VALIDATION_ERROR" in err and "cluster_nope" in err


def test_the_fault_command_needs_the_servers_key(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "fault", "xid", "--url", server.base_url, "--api-key", "nope", "--cluster-id", "cluster_abc123"
    )
    assert code == 2 and "401" in err


def test_schedule_create_list_delete(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "schedule",
        "create",
        "weekly-patching",
        *api_args(server),
        "--expression",
        "cron(0 2 ? * SUN *)",
        "--timezone",
        "Europe/Berlin",
        "--name-pattern",
        "ml-*",
        "--max-concurrency",
        "2",
    )
    assert code == 0, err
    assert "schedule weekly-patching created: cron(0 2 ? * SUN *) (Europe/Berlin)" in out

    code, out, _ = run(capsys, "schedule", "list", *api_args(server))
    assert code == 0 and "weekly-patching" in out and "Europe/Berlin" in out

    # serve fires it on demand, as Scheduler would; the rollout covers the ml-* clusters
    code, out, err = run(capsys, "schedule", "fire", "weekly-patching", *api_args(server))
    assert code == 0, err
    assert "over 1 clusters" in out
    rollout_id = out.split()[4]
    code, out, _ = run(capsys, "rollout", "status", rollout_id, *api_args(server), "--watch")
    assert code == 0 and "cluster_abc123" in out and "succeeded" in out
    code, out, err = run(capsys, "schedule", "fire", "no-such-schedule", *api_args(server))
    assert code == 2 and "NOT_FOUND" in err

    code, out, err = run(capsys, "schedule", "create", "bad", *api_args(server), "--expression", "rate(1 days)")
    assert code == 2 and "VALIDATION_ERROR" in err

    code, out, _ = run(capsys, "schedule", "delete", "weekly-patching", *api_args(server))
    assert code == 0 and "deleted" in out
    code, out, _ = run(capsys, "schedule", "list", *api_args(server), "--json")
    assert json.loads(out)["data"] == []


def test_rollout_start_wait_reports_each_cluster(
    server: LocalServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "rollout.json"
    spec.write_text(
        json.dumps({"maintenance_window": {"id": "mw-cli"}, "cluster_ids": ["cluster_abc123"], "max_concurrency": 1})
    )

    code, out, err = run(capsys, "rollout", "start", str(spec), *api_args(server), "--wait")

    assert code == 0, out + err
    assert "1/1 done  1 ok" in out
    assert "cluster_abc123" in out and "succeeded" in out
    rollout_id = out.split()[1]
    code, out, _ = run(capsys, "rollout", "status", rollout_id, *api_args(server), "--json")
    assert code == 0 and json.loads(out)["status"] == "completed"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["restart", "cluster_abc123", "--request", "/nonexistent/body.json"], "no such file: /nonexistent/body.json"),
        (["restart", "cluster_abc123", "--request", "{bad}"], "not valid JSON"),
        (["clusters", "--url", "foo"], "error: "),
        (["demo", "--time-scale", "0"], "--time-scale must be greater than 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_not_a_traceback(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a command with an unreadable file, a bad URL or a bad option value
    if "{bad}" in argv:
        bad = tmp_path / "bad.json"
        bad.write_text("{bad}")
        argv = [str(bad) if a == "{bad}" else a for a in argv]
    # When it runs
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    # Then it exits 2 with one line naming the problem, and no traceback
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error") or "error:" in line]) == 1


def test_rollout_resume_runs_the_rest_in_a_later_window(
    server: LocalServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a rollout whose window had closed before it started: nothing ran
    spec = tmp_path / "rollout.json"
    spec.write_text(
        json.dumps(
            {
                "maintenance_window": {"id": "mw-missed", "end": "2020-01-01T00:00:00Z"},
                "cluster_ids": ["cluster_abc123"],
            }
        )
    )
    code, out, err = run(capsys, "rollout", "start", str(spec), *api_args(server), "--wait")
    assert code == 1, out + err
    assert "skipped_window_closed" in out
    rollout_id = out.split()[1]

    # When it is resumed in a later window of 60 minutes
    code, out, err = run(
        capsys,
        "rollout",
        "resume",
        rollout_id,
        *api_args(server),
        "--window-minutes",
        "60",
        "--window-id",
        "mw-next",
        "--wait",
    )

    # Then the cluster runs in it, and the rollout records that window
    assert code == 0, out + err
    assert f"rollout {rollout_id} resumed (attempt 2)" in out
    assert "cluster_abc123" in out and "succeeded" in out
    code, out, _ = run(capsys, "rollout", "status", rollout_id, *api_args(server), "--json")
    status = json.loads(out)
    assert (status["maintenance_window"], status["attempt"], status["successful_updates"]) == ("mw-next", 2, 1)
    # a window that cannot be given both ways is refused before anything is sent
    code, _, err = run(
        capsys,
        "rollout",
        "resume",
        rollout_id,
        *api_args(server),
        "--window-end",
        "2099-01-01T00:00:00Z",
        "--window-minutes",
        "5",
    )
    assert code == 2 and "not both" in err
    # and one the API refuses comes back as its VALIDATION_ERROR
    code, _, err = run(
        capsys,
        "rollout",
        "resume",
        rollout_id,
        *api_args(server),
        "--window-start",
        "2099-01-01T00:00:00Z",
        "--window-minutes",
        "5",
    )
    assert code == 2 and "VALIDATION_ERROR" in err
