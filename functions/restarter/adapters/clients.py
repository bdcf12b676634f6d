"""The boto3 clients: one botocore session per container, each client made on its first call.

Making a client loads its service model (hundreds of milliseconds on a cold start); a second
client of the same session reuses the loaded models. So a function's sets of adapters share one
`AwsClients`, and a cold start pays only for the clients its invocation actually calls.

Every client is typed with its mypy-boto3 client type; the stubs are a dev dependency only, so
they are imported for type checking alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_stepfunctions import SFNClient

# EC2 and SSM calls are not retried by the SDK: the state machine's `Retry` owns the backoff,
# so that throttling shows in the execution history and never burns Lambda time in sleeps.
PROVIDER_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
SERVICE_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3})
# An authorizer sits in front of every API call: fail fast rather than hold the request.
AUTHORIZER_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2, read_timeout=3
)


class LazyClient:
    """Stands in for a boto3 client and makes it on first use (once, even from several threads)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def made(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
        return getattr(self._client, name)


class AwsClients:
    """The clients of one container (one region, one session), each made on its first call."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._session: boto3.session.Session | None = None
        self._clients: dict[tuple[str, int], LazyClient] = {}
        self._lock = threading.Lock()

    def _session_once(self) -> boto3.session.Session:
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session(region_name=self.region)
            return self._session

    def _client(self, service: str, config: Config) -> Any:
        def make() -> Any:
            return self._session_once().client(service, config=config)  # type: ignore[call-overload]

        with self._lock:
            return self._clients.setdefault((service, id(config)), LazyClient(make))

    def made(self) -> list[str]:
        """The services whose client exists by now: what this container has paid for."""
        with self._lock:
            return sorted({service for (service, _), client in self._clients.items() if client.made})

    def dynamodb(self, config: Config = SERVICE_CLIENT_CONFIG) -> DynamoDBClient:
        return cast("DynamoDBClient", self._client("dynamodb", config))

    def ec2(self) -> EC2Client:
        return cast("EC2Client", self._client("ec2", PROVIDER_CLIENT_CONFIG))

    def ssm(self) -> SSMClient:
        return cast("SSMClient", self._client("ssm", PROVIDER_CLIENT_CONFIG))

    def events(self) -> EventBridgeClient:
        return cast("EventBridgeClient", self._client("events", SERVICE_CLIENT_CONFIG))

    def stepfunctions(self) -> SFNClient:
        return cast("SFNClient", self._client("stepfunctions", SERVICE_CLIENT_CONFIG))

    def sqs(self) -> SQSClient:
        return cast("SQSClient", self._client("sqs", SERVICE_CLIENT_CONFIG))

    def scheduler(self) -> EventBridgeSchedulerClient:
        return cast("EventBridgeSchedulerClient", self._client("scheduler", SERVICE_CLIENT_CONFIG))

    def cloudwatch(self) -> CloudWatchClient:
        return cast("CloudWatchClient", self._client("cloudwatch", SERVICE_CLIENT_CONFIG))

    def iam(self) -> Any:
        """Only for diagnostics (iam:SimulatePrincipalPolicy); untyped: no stubs are pinned for it."""
        return self._client("iam", SERVICE_CLIENT_CONFIG)
