"""Idempotency-Key on the API: the same key and body replay the answer, another body is a conflict,
and keys that are too long, not printable or share a prefix never answer each other."""

from __future__ import annotations

import pytest

from restarter_local.engine import LocalAws
from tests.integration.harness import RESTART, ApiClient, Seed

# ---------------------------------------------------------------- idempotency


def test_same_idempotency_key_and_body_replays_the_answer_without_a_second_restart(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    seed()
    headers = {"Idempotency-Key": "maint-2024-01-15-cluster_abc123"}

    first = api.call("POST", RESTART, {"restart_reason": "nightly"}, headers=headers)
    replay = api.call("POST", RESTART, {"restart_reason": "nightly"}, headers=headers)

    assert first.status == replay.status == 200
    assert replay.json()["data"]["restart_id"] == first.json()["data"]["restart_id"]
    assert len(aws.executions()) == 1


def test_same_idempotency_key_with_another_body_is_409_conflict(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    headers = {"Idempotency-Key": "k-1"}
    api.call("POST", RESTART, {"restart_reason": "one"}, headers=headers)

    answer = api.call("POST", RESTART, {"restart_reason": "two"}, headers=headers)

    assert answer.status == 409
    assert answer.json()["error"]["code"] == "CONFLICT"
    assert len(aws.executions()) == 1


@pytest.mark.parametrize("path", [RESTART, "/v1/rollouts"])
@pytest.mark.parametrize("key", ["k" * 201, "", "   ", "two words", "tab\there", "nul\x01byte", "clé"])
def test_an_idempotency_key_that_is_too_long_or_not_printable_is_400_naming_the_header(
    api: ApiClient, seed: Seed, aws: LocalAws, path: str, key: str
) -> None:
    seed()
    body = (
        {"restart_reason": "x"}
        if path == RESTART
        else {"maintenance_window": {"id": "mw-1"}, "cluster_ids": ["cluster_abc123"]}
    )

    answer = api.call("POST", path, body, headers={"Idempotency-Key": key})

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in error["details"]["errors"]] == ["Idempotency-Key"]
    assert aws.executions() == []


def test_two_long_keys_that_share_a_prefix_never_answer_each_other(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given keys longer than the limit that differ only past character 200, then both are
    refused (they were cut to the same key and the second answered the first's restart); a key
    of exactly 200 characters still replays."""
    seed()
    prefix = "maint-" + "x" * 194
    first = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix + "-a"})
    second = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix + "-b"})
    assert first.status == second.status == 400
    assert aws.executions() == []

    accepted = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix})
    replay = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix})

    assert len(prefix) == 200
    assert accepted.status == replay.status == 200, replay.body
    assert replay.json()["data"]["restart_id"] == accepted.json()["data"]["restart_id"]
    assert len(aws.executions()) == 1
