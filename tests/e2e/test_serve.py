"""`restarter serve`: the API over real loopback HTTP, backed by the embedded AWS and a fleet file.

The default-fleet tests share one server (a class-scoped fixture); the other servers are small
and started one at a time (the embedded AWS is one per process).
"""

from __future__ import annotations

import _thread
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from restarter_local import serve_command
from restarter_local.fleet_file import FleetFile, FleetFileError, apply_faults, default_fleet_path, load_fleet
from restarter_local.moto_ext import SimulatedAgentState
from restarter_local.serve_command import main_serve
from restarter_local.server import LocalServer, ServerError
from tests import seed_clients
from tests.conftest import load_event

TIME_SCALE = 600.0
# the IPv4 wildcard address, which the server must refuse (spelled out so no linter mistakes it for a bind)
ANY_IPV4 = ".".join("0" * 4)
KNOWN_KEY = "rk_0123abcd_" + "k" * 40
SMALL_FLEET = """
clusters:
  - id: cluster_bad001
    name: eval-cluster
    instance_type: g5.xlarge
    ports:
      - {internal_port: 8888, external_port: 30888, description: Jupyter}
faults:
  - kind: close_port
    cluster_id: cluster_bad001
    port: 8888
"""


def seed_curl_body(event: str) -> dict[str, Any]:
    return dict(load_event(event)["request"])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="class")
def default_server() -> Iterator[LocalServer]:
    with LocalServer(port=0, time_scale=TIME_SCALE) as server:
        yield server


# ---------------------------------------------------------------- the default fleet, over HTTP


class TestDefaultFleet:
    @pytest.mark.parametrize(
        "event",
        ["start_restart_basic.json", "start_restart_config_updates.json", "start_restart_force_snapshot.json"],
    )
    def test_given_the_default_fleet_when_a_seed_curl_example_is_posted_then_it_answers_200_success(
        self, default_server: LocalServer, event: str
    ) -> None:
        answer = requests.post(
            f"{default_server.base_url}/clusters/cluster_abc123/restart",
            headers=auth(default_server.api_key),
            json=seed_curl_body(event),
            timeout=60,
        )

        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/json"
        body = answer.json()
        assert body["success"] is True
        data = body["data"]
        assert (data["id"], data["name"]) == ("cluster_abc123", "ml-training-cluster")
        assert data["restart_status"] == "ready" and data["status"] == "running"
        applied = data["configuration_changes"]
        if event == "start_restart_config_updates.json":
            # memory_gb 512 / cpu_cores 64 are minimums: the p4d family has one size,
            # p4d.24xlarge (96 vCPUs, 1152 GiB), which already satisfies them, so the API
            # rightly keeps the instance type (no hardware change, same rate) and applies the rest.
            assert not any(line.startswith("instance_type") for line in applied)
            assert data["cost_impact"]["new_hourly_rate"] == data["cost_impact"]["old_hourly_rate"]
            assert "docker_image: tensorone/pytorch:2.1-cuda12.1 -> tensorone/pytorch:2.2-cuda12.1" in applied
        if event == "start_restart_force_snapshot.json":
            assert data["restart_type"] == "force"
            assert "root_volume: current -> snap_xyz789" in applied

    def test_given_no_key_or_a_wrong_key_when_calling_the_api_then_it_answers_401_in_the_envelope(
        self, default_server: LocalServer
    ) -> None:
        missing = requests.get(f"{default_server.base_url}/clusters/cluster_abc123", timeout=10)
        wrong = requests.get(
            f"{default_server.base_url}/clusters/cluster_abc123", headers=auth("rk_deadbeef_" + "x" * 40), timeout=10
        )

        for answer in (missing, wrong):
            assert answer.status_code == 401
            assert answer.json() == {
                "success": False,
                "error": {"code": "UNAUTHORIZED", "message": "Missing or invalid API key", "details": {}},
            }

    def test_given_the_server_when_the_openapi_document_and_swagger_ui_are_fetched_then_both_are_served(
        self, default_server: LocalServer
    ) -> None:
        spec = requests.get(f"{default_server.base_url}/openapi.json", timeout=10)
        docs = requests.get(default_server.docs_url, timeout=10)
        # the stage-prefixed form of an execute-api URL, which Swagger UI's "Try it out" calls
        staged = requests.get(
            f"{default_server.root_url}/local/v1/clusters/cluster_abc123", headers=auth(default_server.api_key)
        )

        assert spec.status_code == 200
        assert "/v1/clusters/{cluster_id}/restart" in spec.json()["paths"]
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert staged.status_code == 200 and staged.json()["data"]["id"] == "cluster_abc123"

    def test_given_the_default_fleet_when_clusters_are_listed_then_it_has_the_three_documented_clusters(
        self, default_server: LocalServer
    ) -> None:
        url = f"{default_server.base_url}/clusters"
        every = requests.get(url, headers=auth(default_server.api_key), timeout=10).json()["data"]
        production = requests.get(
            url, headers=auth(default_server.api_key), params={"label": "env=production"}, timeout=10
        ).json()["data"]

        by_id = {c["id"]: c for c in every}
        assert set(by_id) == {"cluster_abc123", "cluster_prod01", "cluster_err001"}
        assert [c["id"] for c in production] == ["cluster_prod01"]
        assert by_id["cluster_prod01"]["name"] == "inference-prod"
        assert by_id["cluster_err001"]["status"] == "error"

    def test_given_the_seed_recovery_client_when_pointed_at_the_server_then_it_restores_the_latest_snapshot(
        self, default_server: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Given the seed's client code, unchanged, with its host routed to the local server
        session = requests.Session()
        session.mount("https://api.tensorone.ai/", _Rebase("https://api.tensorone.ai", default_server.root_url))
        monkeypatch.setattr(seed_clients, "requests", SimpleNamespace(get=session.get, post=session.post))
        monkeypatch.setattr(seed_clients, "API_KEY", default_server.api_key)

        # When it recovers the cluster in error
        result = seed_clients.recover_cluster_from_error("cluster_err001", "restore_snapshot")  # type: ignore[no-untyped-call]

        # Then the restore ran over HTTP and the cluster runs again
        assert result["success"] is True, result
        assert result["recovery_actions"] == ["Restored from snapshot: checkpoint snap_err001a"]
        assert result["new_status"] == "running"
        session.close()

    def test_given_the_server_is_running_when_another_starts_on_its_port_then_it_is_refused_in_one_line(
        self, default_server: LocalServer
    ) -> None:
        port = default_server.bound_port

        with pytest.raises(ServerError) as refused:
            LocalServer(port=port).start()

        assert str(refused.value) == f"port {port} is in use on 127.0.0.1: pass --port"


class _Rebase(HTTPAdapter):
    """Sends requests for one base URL to another (the seed's clients name their host)."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__()
        self.old, self.new = old, new

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        request.url = (request.url or "").replace(self.old, self.new, 1)
        return super().send(request, *args, **kwargs)


# ---------------------------------------------------------------- refusals before anything starts


def test_given_a_port_in_use_when_the_server_starts_then_it_raises_a_one_line_server_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalServer(port=port)

        with pytest.raises(ServerError) as refused:
            server.start()

    assert str(refused.value) == f"port {port} is in use on 127.0.0.1: pass --port"
    assert server.engine is None  # refused before the embedded AWS started


@pytest.mark.parametrize("host", [ANY_IPV4, "::", "192.168.1.10", "10.0.0.1", "example.com", "", "::ffff:7f00:1"])
def test_given_a_non_loopback_host_when_the_server_is_made_then_it_is_refused(host: str) -> None:
    with pytest.raises(ServerError) as refused:
        LocalServer(host=host)

    assert "loopback only" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("host", "bound"),
    [("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("localhost", "127.0.0.1"), ("::1", "::1")],
)
def test_given_a_loopback_host_when_the_server_is_made_then_it_binds_that_address(host: str, bound: str) -> None:
    assert LocalServer(host=host).bind_host == bound


@pytest.mark.parametrize("key", ["secret", "rk_0123abcd_short", "rk_XYZ_" + "a" * 40])
def test_given_a_malformed_api_key_when_the_server_is_made_then_the_error_explains_the_format(key: str) -> None:
    with pytest.raises(ServerError) as refused:
        LocalServer(api_key=key)

    message = str(refused.value)
    assert "rk_<8 hex digits>_" in message and "\n" not in message


def test_given_a_fleet_file_with_a_bad_field_when_the_server_is_made_then_the_error_names_file_and_field(
    tmp_path: Path,
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("clusters:\n  - id: cluster_x\n    name: x\n    instance_count: 0\n")

    with pytest.raises(FleetFileError) as refused:
        LocalServer(fleet=fleet)

    assert str(refused.value) == (
        f"fleet file {fleet}: clusters[0].instance_count: Input should be greater than or equal to 1"
    )


ONE = "clusters:\n  - {id: c1, name: x}\n"
BAD_FLEETS = [
    (
        "clusters:\n  - {id: c1, nmae: x}\n",
        "clusters[0].name: required field is missing; clusters[0].nmae: unknown field",
    ),
    (ONE + "  - {id: c1, name: y}\n", "clusters[1].id: duplicate cluster id 'c1'"),
    (ONE + "faults:\n  - {kind: close_port, cluster_id: c1}\n", "faults[0]: `port` is required for a close_port fault"),
    (ONE + "faults:\n  - {kind: xid, cluster_id: c2}\n", "faults[0].cluster_id: no cluster 'c2' in this fleet"),
    (
        ONE + "faults:\n  - {kind: xid, cluster_id: c1, instance: 1}\n",
        "faults[0].instance: c1 has 1 instance(s), index 1 is out of range",
    ),
    (
        "clusters:\n  - {id: c1, name: x, environment: {BATCH_SIZE: 128}}\n",
        "clusters[0].environment.BATCH_SIZE: Input should be a valid string",
    ),
    (
        "clusters:\n  - {id: c1, name: x, checkpoints: [b1]}\n",
        "clusters[0].checkpoints[0]: String should match pattern",
    ),
    ("clusters: [\n", "invalid YAML at line 2, column 1"),
    ("", "the file is empty"),
]


@pytest.mark.parametrize(("text", "error"), BAD_FLEETS)
def test_given_a_bad_fleet_file_when_it_is_loaded_then_the_one_line_error_names_the_field(
    tmp_path: Path, text: str, error: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text)

    with pytest.raises(FleetFileError) as refused:
        load_fleet(fleet)

    assert str(refused.value).startswith(f"fleet file {fleet}: {error}")
    assert "\n" not in str(refused.value)


def test_given_a_json_fleet_file_when_it_is_loaded_then_it_reads_like_yaml(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"clusters": [{"id": "c1", "name": "x", "status": "stopped"}], "timings": {"a": 1}}))

    loaded = load_fleet(fleet)

    assert [(c.id, c.status) for c in loaded.clusters] == [("c1", "stopped")]
    assert loaded.timings == {"a": 1}


def test_given_the_default_fleet_when_it_is_loaded_then_it_is_the_packaged_yaml() -> None:
    fleet = load_fleet(None)

    assert default_fleet_path().name == "default.yaml" and default_fleet_path().is_file()
    assert [c.id for c in fleet.clusters] == ["cluster_abc123", "cluster_prod01", "cluster_err001"]
    abc = fleet.clusters[0]
    assert (abc.instance_type, abc.instance_count, abc.checkpoints) == ("p4d.24xlarge", 2, ["snap_xyz789"])
    assert fleet.faults == []


def test_given_a_bad_fleet_file_when_main_serve_runs_then_it_prints_one_line_and_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_command, "_quiet_logs", lambda: None)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("clusters:\n  - {id: c1, name: x, instance_type: 7}\n")

    code = main_serve("127.0.0.1", 0, fleet, TIME_SCALE, None)

    err = capsys.readouterr().err
    assert code == 2
    assert err == f"restarter serve: fleet file {fleet}: clusters[0].instance_type: Input should be a valid string\n"


def test_given_a_public_host_when_main_serve_runs_then_it_prints_one_line_and_returns_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_command, "_quiet_logs", lambda: None)

    code = main_serve(ANY_IPV4, 8080, None, TIME_SCALE, None)

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "loopback only" in err


# ---------------------------------------------------------------- faults


def test_given_every_fault_kind_when_applied_then_each_reaches_the_simulated_agent() -> None:
    fleet = FleetFile.model_validate(
        {
            "clusters": [{"id": "c1", "name": "x", "instance_count": 2}],
            "faults": [
                {"kind": "never_healthy", "cluster_id": "c1"},
                {"kind": "close_port", "cluster_id": "c1", "instance": 1, "port": 8888},
                {"kind": "fail_command", "cluster_id": "c1", "op": "start_services", "times": 1},
                {"kind": "xid", "cluster_id": "c1", "instance": 1},
                {"kind": "agent_offline", "cluster_id": "c1"},
                {"kind": "throttle", "service": "ec2", "action": "RebootInstances", "times": 2},
            ],
        }
    )
    agent = SimulatedAgentState()
    cluster = SimpleNamespace(id="c1", instance_ids=["i-0", "i-1"])

    apply_faults(SimpleNamespace(agent=agent), fleet, [cluster])  # type: ignore[arg-type, list-item]

    assert agent.is_never_healthy("i-0") and not agent.is_never_healthy("i-1")
    assert agent.is_port_closed("i-1", 8888) and not agent.is_port_closed("i-0", 8888)
    fault = agent.take_command_fault("i-0", "start_services")
    assert fault is not None and fault.stderr == "simulated failure"
    assert agent.take_command_fault("i-0", "start_services") is None  # once only
    assert len(agent.xid_lines("i-1")) == 1
    assert agent.is_agent_offline("i-0")
    assert [agent.record_call("ec2", "RebootInstances") is not None for _ in range(3)] == [True, True, False]


def test_given_a_close_port_fault_in_the_fleet_file_when_a_deploy_restart_runs_then_it_is_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a server on a fleet file whose only cluster has its Jupyter port closed, and a fixed key
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SMALL_FLEET)
    server = LocalServer(port=0, fleet=fleet, time_scale=TIME_SCALE, api_key=KNOWN_KEY)
    server.start()
    base_url, docs_url = server.base_url, server.docs_url
    answers: dict[str, requests.Response] = {}

    def client() -> None:
        try:
            url = f"{base_url}/clusters/cluster_bad001"
            answers["deploy"] = requests.post(
                f"{url}/restart",
                headers=auth(KNOWN_KEY),
                json={"update_docker_image": "tensorone/pytorch:2.3-broken", "wait_for_ready": True},
                timeout=60,
            )
            answers["cluster"] = requests.get(url, headers=auth(KNOWN_KEY), timeout=10)
        finally:
            _thread.interrupt_main()  # Ctrl-C

    # When a deploy restart is posted over HTTP while the server blocks until Ctrl-C
    threading.Thread(target=client, daemon=True).start()
    code = server.serve_forever_until_interrupted()

    # Then the restart was rolled back, the server printed where to reach it and stopped cleanly
    deploy = answers["deploy"]
    assert deploy.status_code == 502, deploy.text
    error = deploy.json()["error"]
    assert error["code"] == "RESTART_FAILED" and error["details"]["status"] == "rolled_back"
    assert answers["cluster"].json()["data"]["template_info"]["docker_image"] == "tensorone/pytorch:2.1-cuda12.1"
    out = capsys.readouterr().out
    assert f"base URL    {base_url}" in out
    assert KNOWN_KEY in out and docs_url in out
    assert code == 0
    assert server.engine is None
    with pytest.raises(requests.ConnectionError):
        requests.get(docs_url, timeout=2)


def test_a_fleet_file_sets_instance_timings(tmp_path: Path) -> None:
    from restarter_local.fleet_file import instance_timings, load_fleet

    path = tmp_path / "fleet.yaml"
    cluster = "clusters:\n  - {id: cluster_t1, name: t1, instance_type: g5.xlarge}\n"
    path.write_text(cluster + "timings:\n  reboot: [240, 360]\n  jitter: 7\n")
    timings = instance_timings(load_fleet(path), 600)
    assert (timings.reboot, timings.jitter, timings.time_scale) == ((240.0, 360.0), 7, 600)
    assert timings.stop == (20.0, 60.0)  # the simulator's default for what the file leaves out

    path.write_text("clusters:\n  - {id: cluster_t1, name: t1}\ntimings:\n  reboot: [360, 240]\n")
    with pytest.raises(FleetFileError, match="timings"):
        instance_timings(load_fleet(path), 600)


def test_fleet_clusters_can_have_fixed_instance_ids_for_sample_events(tmp_path: Path) -> None:
    from restarter_local.engine import LocalAws
    from restarter_local.fleet_file import load_fleet, seed_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "clusters:\n  - {id: cluster_alarm, name: a, instance_type: g5.xlarge, instance_ids: [i-12345678901234567]}\n"
    )
    with LocalAws() as engine:
        [cluster] = seed_fleet(engine, load_fleet(path))
        described = engine.client("ec2").describe_instances(InstanceIds=["i-12345678901234567"])
    assert cluster.instance_ids == ["i-12345678901234567"]
    assert described["Reservations"][0]["Instances"][0]["Tags"][0] == {
        "Key": "restarter:cluster",
        "Value": "cluster_alarm",
    }

    path.write_text("clusters:\n  - {id: c, name: a, instance_count: 2, instance_ids: [i-12345678901234567]}\n")
    with pytest.raises(FleetFileError, match="instance_ids"):
        load_fleet(path)
