"""The API's audit trail: every request audited with secrets redacted, every mutation and refusal in
the tenant's trail, another tenant's probes kept out of it."""

from __future__ import annotations

import json

from restarter_local.engine import LocalAws
from tests.integration.harness import RESTART, ApiClient, Seed

# ---------------------------------------------------------------- audit and secrets


def test_every_request_is_audited_with_secrets_redacted(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    api.call("POST", RESTART, {"environment_updates": {"WANDB_API_KEY": "wb_top_secret"}, "restart_reason": "rotate"})
    api.call("POST", RESTART, {"timeout_minutes": 99, "environment_updates": {"X": "also_secret"}})
    aws.wait_for_executions()

    assert aws.deps is not None
    entries = aws.deps.audit.entries("cluster_abc123")
    outcomes = [(e["action"], e["outcome"]) for e in entries]
    assert ("restart.requested", "accepted") in outcomes
    assert ("restart.requested", "refused") in outcomes
    assert all(e["actor"].startswith("default/") for e in entries if e["action"] == "restart.requested")
    accepted = next(e for e in entries if e["outcome"] == "accepted")
    assert accepted["details"]["reason"] == "rotate"
    assert "environment.WANDB_API_KEY: (unset) -> <redacted>" in accepted["details"]["changes"]
    dumped = json.dumps(entries)
    assert "wb_top_secret" not in dumped and "also_secret" not in dumped


def test_every_mutation_and_every_refusal_is_in_the_tenants_trail(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given a mix of requests, then the tenant's trail holds each mutation (accepted or refused)
    and each refusal of any request, with requester, tenant, method, path, outcome and status;
    reads that succeed are not written; no secret is."""
    seed()
    assert aws.deps is not None
    restart_id = api.call(
        "POST", RESTART, {"wait_for_ready": True, "environment_updates": {"WANDB_API_KEY": "wb_top_secret"}}
    ).json()["data"]["restart_id"]
    calls = [
        ("POST", f"/v1/restarts/{restart_id}/cancel", None, {}, 409),  # already ended
        ("POST", RESTART, "force=true", {"Content-Type": "text/plain"}, 415),
        ("POST", RESTART, json.dumps({"restart_reason": "x" * 70000}), {}, 413),
        ("GET", "/v1/clusters/cluster_nope", None, {}, 404),
        ("DELETE", "/v1/clusters/cluster_abc123", None, {}, 405),
        ("GET", "/v1/clusters/cluster_abc123", None, {}, 200),  # a read that succeeds: not written
    ]
    for method, path, raw, headers, status in calls:
        assert api.call(method, path, raw=raw, headers=headers).status == status, (method, path)
    assert api.call("POST", RESTART, {}, key="reader").status == 403

    trail = aws.deps.audit.entries("tenant:default")

    seen = [(e["details"]["method"], e["details"]["path"], e["details"]["status"], e["outcome"]) for e in trail]
    assert sorted(seen) == sorted(
        [
            ("POST", RESTART, 200, "accepted"),
            ("POST", f"/v1/restarts/{restart_id}/cancel", 409, "refused"),
            ("POST", RESTART, 415, "refused"),
            ("POST", RESTART, 413, "refused"),
            ("GET", "/v1/clusters/cluster_nope", 404, "refused"),
            ("DELETE", "/v1/clusters/cluster_abc123", 405, "refused"),
            ("POST", RESTART, 403, "refused"),
        ]
    )
    assert all(e["action"] == "api.request" and e["details"]["tenant_id"] == "default" for e in trail)
    assert all(e["actor"].startswith("default/") for e in trail)
    codes = {e["details"]["status"]: e["details"]["error_code"] for e in trail}
    assert codes[409] == "INVALID_STATE" and codes[415] == "VALIDATION_ERROR" and codes[405] == "METHOD_NOT_ALLOWED"
    dumped = json.dumps(trail)
    assert "wb_top_secret" not in dumped and "Bearer" not in dumped and api.keys["admin"] not in dumped
    # the refused cancel is in the cluster's trail too
    refused_cancel = [
        e
        for e in aws.deps.audit.entries("cluster_abc123")
        if (e["action"], e["outcome"]) == ("restart.cancel_requested", "refused")
    ]
    assert [e["details"]["restart_id"] for e in refused_cancel] == [restart_id]


def test_another_tenants_probes_stay_out_of_the_clusters_trail(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given tenant globex probing tenant default's cluster, then default's cluster trail shows
    nothing of it, and globex's own trail shows every probe."""
    seed()
    assert aws.deps is not None
    probes = [
        ("POST", RESTART, {}, 404),
        ("POST", RESTART, {"timeout_minutes": 99}, 400),
        ("GET", "/v1/clusters/cluster_abc123", None, 404),
        ("GET", "/v1/clusters/cluster_abc123/restarts", None, 404),
    ]
    for method, path, body, status in probes:
        assert api.call(method, path, body, key="other").status == status, (method, path)

    assert aws.deps.audit.entries("cluster_abc123") == []
    assert aws.deps.audit.entries("tenant:default") == []
    theirs = aws.deps.audit.entries("tenant:globex")
    assert sorted((e["details"]["method"], e["details"]["status"]) for e in theirs) == sorted(
        (method, status) for method, _, _, status in probes
    )
    assert all(e["outcome"] == "refused" and e["actor"].startswith("globex/") for e in theirs)
