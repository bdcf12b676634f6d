"""An AWS dependency failing under the API: throttled is 503 with Retry-After, failed is 502, and
neither answer carries the AWS text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.harness import ApiClient, Seed

# ---------------------------------------------------------------- dependencies failing


def _raise_translated(code: str, message: str) -> Callable[..., Any]:
    from botocore.exceptions import ClientError

    from restarter.adapters.aws_errors import translated

    def fail(*args: Any, **kwargs: Any) -> Any:
        with translated("ec2:DescribeInstances"):
            raise ClientError({"Error": {"Code": code, "Message": message}}, "DescribeInstances")

    return fail


def test_a_throttled_dependency_is_503_internal_with_retry_after(
    api: ApiClient, seed: Seed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Given EC2 throttling, then the answer is 503 INTERNAL with Retry-After and a generic
    message; what AWS said is in the log, not in the answer."""
    from restarter.services import restart_api

    seed()
    monkeypatch.setattr(
        restart_api, "get_cluster", _raise_translated("RequestLimitExceeded", "Request limit exceeded.")
    )

    answer = api.call("GET", "/v1/clusters/cluster_abc123")

    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json() == {
        "success": False,
        "error": {"code": "INTERNAL", "message": "A dependency is busy, retry", "details": {"retry_after_seconds": 5}},
    }
    assert "RequestLimitExceeded" not in answer.body and "ec2:" not in answer.body
    [logged] = [r for r in caplog.records if r.getMessage() == "dependency busy"]
    assert logged.__dict__["dependency"] == {
        "operation": "ec2:DescribeInstances",
        "aws_error_code": "RequestLimitExceeded",
    }


def test_a_failed_dependency_is_502_internal_without_the_aws_text(
    api: ApiClient, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restarter.services import restart_api

    seed()
    secret_detail = "User: arn:aws:sts::123456789012:assumed-role/x is not authorized to perform ec2:DescribeInstances"
    monkeypatch.setattr(restart_api, "get_cluster", _raise_translated("UnauthorizedOperation", secret_detail))

    answer = api.call("GET", "/v1/clusters/cluster_abc123")

    assert answer.status == 502
    assert answer.json() == {
        "success": False,
        "error": {"code": "INTERNAL", "message": "A dependency failed", "details": {}},
    }
    assert "arn:aws" not in answer.body and "UnauthorizedOperation" not in answer.body
