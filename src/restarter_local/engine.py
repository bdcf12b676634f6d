"""The embedded AWS: moto in-process, Step Functions running the real ASL, the real handlers.

`LocalAws` provisions what `template.yaml` declares (tables, bus, functions, the state machine
from its ASL file), makes moto's Lambda run our handlers in-process, scales Step Functions
waits and retry backoff by `time_scale`, and installs a clock that runs at the same scale, so
that deadlines, waits and recorded durations agree with each other.

Its parts live beside it: the clock in `clock`, the template reading in `template`, the
in-process Lambda dispatch in `lambdas`, the account and region in `account`.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from restarter.adapters.clients import AwsClients
from restarter.adapters.scheduler import fill_context_attributes
from restarter.services.ended_executions import ENDED_STATUSES as ENDED_EXECUTION_STATUSES
from restarter.settings import Settings
from restarter.wiring import Dependencies, build_dependencies, use_api_key_store, use_dependencies
from restarter_local.account import ACCOUNT, REGION
from restarter_local.clock import ScaledClock
from restarter_local.lambdas import FunctionRegistry
from restarter_local.moto_ext import InstanceTimings, SimulatedAgentState, install_extensions, set_active_engine
from restarter_local.moto_ext._runtime import set_execution_listener
from restarter_local.resources import project_file
from restarter_local.template import TEMPLATE, function_specs, load_template, resolve_intrinsic

_default_image_id: str | None = None
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()
EXECUTION_ENDED_FUNCTION = "RestartExecutionEndedFunction"
# The in-process Lambdas' clients, shared by every engine of the process like `_CLIENTS`.
_LAMBDA_CLIENTS = AwsClients(REGION)
_default_session_checked = threading.Event()


def _default_session_after_moto() -> None:
    """Once per process, a new boto3 default session: one made before moto was imported (an
    import that called boto3) would not carry moto's interception, and nothing would reset it."""
    if not _default_session_checked.is_set():
        boto3.setup_default_session()
        _default_session_checked.set()


# ------------------------------------------------------------------ the engine


class LocalAws:
    """The whole system on moto. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        time_scale: float = 600.0,
        template: Path = TEMPLATE,
        *,
        realistic: bool = False,
        start_time: datetime | None = None,
    ) -> None:
        """`realistic` gives instances the time-scaled stop/start/reboot durations of a real fleet;
        without it moto's transitions are instant (what most tests want). `start_time`: the
        simulated time when the engine starts (default now)."""
        self.time_scale = time_scale
        self.start_time = start_time
        self.template = load_template(template)
        self._mock: Any = None
        self.settings: Settings | None = None
        self.environment: dict[str, str] = {}
        self.deps: Dependencies | None = None
        # EventBridge's rule on the restart state machine's ended executions (FAILED, TIMED_OUT,
        # ABORTED) delivers to RestartExecutionEndedFunction; a test of what happens without it
        # turns it off
        self.deliver_execution_events = True
        self.execution_events: list[dict[str, Any]] = []
        self.execution_events_handled = 0
        self._fresh_simulation(realistic)

    def _fresh_simulation(self, realistic: bool) -> None:
        """A new clock at `time_scale`, a new simulated fleet, an empty invocation log."""
        self.clock = ScaledClock(self.time_scale, origin=self.start_time)
        self.agent = SimulatedAgentState()
        if realistic:
            self.agent.timings = InstanceTimings(time_scale=self.time_scale)
        self.registry = FunctionRegistry(function_specs(self.template))

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "Restarter",
        }.items():
            os.environ.setdefault(key, value)
        self._mock = mock_aws(
            config={
                "stepfunctions": {"execute_state_machine": True},
                "lambda": {"use_docker": False},
                # boto3's default session (what moto's Step Functions makes a Lambda client from,
                # for every task) lives as long as the process: a new one per engine would load
                # the endpoint rules and service models again; `_default_session_after_moto`
                # makes sure moto intercepts it
                "core": {"reset_boto3_session": False},
            }
        )
        self._mock.start()
        _default_session_after_moto()
        install_extensions(self.agent)
        set_active_engine(self.registry, self.clock)
        set_execution_listener(self._execution_ended)
        self.settings = self._provision()
        self.deps = build_dependencies(self.settings, clock=self.clock, clients=_LAMBDA_CLIENTS)
        use_dependencies(self.deps)
        from restarter.adapters.api_keys import ApiKeyStore

        self.api_keys = ApiKeyStore(self.client("dynamodb"), self.settings.api_keys_table)
        use_api_key_store(self.api_keys)

    def stop(self) -> None:
        self.wait_for_executions(timeout=30, raise_on_timeout=False)
        use_dependencies(None)
        use_api_key_store(None)
        set_active_engine(None, self.clock)  # executions still running keep their scaled waits
        set_execution_listener(None)
        self.agent.reset()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None

    def reset(self, time_scale: float | None = None, *, realistic: bool | None = None) -> None:
        """Start again from nothing, as a new engine would (moto's backends emptied, a new clock,
        fleet simulation and invocation log, everything provisioned again), keeping what does not
        change: the template and, process-wide, the boto3 clients and parsed ASL. So tests share
        one engine: a reset takes ~0.2 s where the first start of a process takes ~1.5 s.
        `time_scale` and `realistic` default to the engine's current ones."""
        self.stop()
        self.deliver_execution_events = True
        self.execution_events, self.execution_events_handled = [], 0
        if time_scale is not None:
            self.time_scale = time_scale
        self._fresh_simulation(self.agent.timings is not None if realistic is None else realistic)
        self.start()

    # --------------------------------------------------------------- clients
    def default_image_id(self) -> str:
        """An AMI for simulated instances. moto's catalog (~1,300 images, ~1 s to list) is the
        same for every engine of a process, so it is listed once per process."""
        global _default_image_id  # noqa: PLW0603 - moto's bundled catalog does not change
        if _default_image_id is None:
            images = self.client("ec2").describe_images(Owners=["amazon"])["Images"]
            _default_image_id = str(images[0]["ImageId"])
        return _default_image_id

    def client(self, service: str) -> Any:
        """A boto3 client on the embedded AWS, one per service and process: building one takes
        ~0.05 s, moto intercepts every client made after it is imported, and its backends are
        what a reset clears, so a client outlives the engines it talks to."""
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(service)
            if client is None:
                client = _CLIENTS[service] = boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
            return client

    # --------------------------------------------------------------- provisioning
    def _provision(self) -> Settings:
        """Create what template.yaml declares, named for local use; the functions' environment
        (Globals + their own variables) resolves `!Ref`s to those names, as CloudFormation would."""
        resources = self.template["Resources"]
        names: dict[str, str] = {}
        dynamodb = self.client("dynamodb")
        for logical_id, resource in resources.items():
            if resource["Type"] != "AWS::DynamoDB::Table":
                continue
            props = resource["Properties"]
            names[logical_id] = f"restarter-local-{logical_id}"
            kwargs: dict[str, Any] = {
                "TableName": names[logical_id],
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
                "BillingMode": "PAY_PER_REQUEST",
            }
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = [
                    {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                    for g in props["GlobalSecondaryIndexes"]
                ]
            dynamodb.create_table(**kwargs)
        names["RestarterEventBus"] = "restarter-local"
        self.client("events").create_event_bus(Name=names["RestarterEventBus"])

        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName="restarter-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        arns: dict[str, str] = {}
        sqs = self.client("sqs")
        for logical_id, resource in resources.items():
            if resource["Type"] == "AWS::IAM::Role":
                arns[logical_id] = iam.create_role(
                    RoleName=f"restarter-local-{logical_id}",
                    AssumeRolePolicyDocument=json.dumps(resource["Properties"]["AssumeRolePolicyDocument"]),
                )["Role"]["Arn"]
            elif resource["Type"] == "AWS::SQS::Queue":
                names[logical_id] = sqs.create_queue(QueueName=f"restarter-local-{logical_id}")["QueueUrl"]
                arns[logical_id] = sqs.get_queue_attributes(QueueUrl=names[logical_id], AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
        lam = self.client("lambda")
        for logical_id, spec in self.registry.specs.items():
            arns[logical_id] = lam.create_function(
                FunctionName=logical_id,
                Runtime="python3.12",
                Role=role_arn,
                Handler=spec.handler,
                Code={"ZipFile": _empty_zip()},
            )["FunctionArn"]

        sfn = self.client("stepfunctions")
        for logical_id, resource in resources.items():
            if resource["Type"] != "AWS::Serverless::StateMachine":
                continue
            machine = resource["Properties"]
            definition = project_file(machine["DefinitionUri"]).read_text()
            # as CloudFormation does: text first (a numeric value sits unquoted), then parsed
            for key, value in machine.get("DefinitionSubstitutions", {}).items():
                definition = definition.replace("${" + key + "}", resolve_intrinsic(value, names, arns) or "")
            names[logical_id] = sfn.create_state_machine(
                name=f"restarter-local-{logical_id}", definition=definition, roleArn=role_arn
            )["stateMachineArn"]

        env: dict[str, str] = {"AWS_DEFAULT_REGION": REGION}
        variables = dict(
            self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        for resource in resources.values():
            if resource["Type"] == "AWS::Serverless::Function":
                variables.update(resource["Properties"].get("Environment", {}).get("Variables", {}))
        for key, value in variables.items():
            resolved = resolve_intrinsic(value, names, arns)
            if resolved is not None:
                env[key] = resolved
        self.environment = env
        # what Lambda would give every function: handlers that read their own variables find them
        os.environ.update(env)
        return Settings.from_environment(env)

    # --------------------------------------------------------------- executions
    def _execution_ended(self, detail: dict[str, Any]) -> None:
        """What the template's ended-execution rule does: the status change, to its function."""
        restart_machine = self.settings.state_machine_arn if self.settings else None
        if (
            not self.deliver_execution_events
            or detail.get("stateMachineArn") != restart_machine
            or detail.get("status") not in ENDED_EXECUTION_STATUSES
        ):
            return
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": ACCOUNT,
            "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [detail["executionArn"]],
            "detail": detail,
        }
        self.execution_events.append(event)
        try:
            with self.clock.invocation(), self.clock.bound_to(None):
                self.registry.invoke(EXECUTION_ENDED_FUNCTION, event)
        finally:
            self.execution_events_handled += 1

    @property
    def execution_events_pending(self) -> bool:
        """A status change is still being handled (what it starts may not have started yet)."""
        return self.execution_events_handled < len(self.execution_events)

    def executions(self) -> list[dict[str, Any]]:
        assert self.settings and self.settings.state_machine_arn
        sfn = self.client("stepfunctions")
        return list(sfn.list_executions(stateMachineArn=self.settings.state_machine_arn)["executions"])

    def wait_for_execution(self, execution_arn: str, timeout: float = 60) -> dict[str, Any]:
        sfn = self.client("stepfunctions")
        end = time.monotonic() + timeout
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return dict(described)
            if time.monotonic() > end:
                raise TimeoutError(f"execution still running after {timeout}s: {execution_arn}")
            time.sleep(0.02)

    def wait_for_executions(self, timeout: float = 60, *, raise_on_timeout: bool = True) -> None:
        if self.settings is None or self._mock is None:
            return
        for execution in self.executions():
            try:
                self.wait_for_execution(execution["executionArn"], timeout)
            except TimeoutError:
                if raise_on_timeout:
                    raise

    def rollout_executions(self) -> list[dict[str, Any]]:
        arn = self.environment.get("ROLLOUT_STATE_MACHINE_ARN")
        if not arn:
            return []
        return list(self.client("stepfunctions").list_executions(stateMachineArn=arn)["executions"])

    def wait_for_rollouts(self, timeout: float = 120) -> None:
        """Every rollout execution, then the restarts they started, to their end."""
        for execution in self.rollout_executions():
            self.wait_for_execution(execution["executionArn"], timeout)
        self.wait_for_executions(timeout)

    # --------------------------------------------------------------- EventBridge Scheduler
    def fire_schedule(self, name: str, group: str, scheduled_time: datetime | None = None, *, attempt: int = 1) -> Any:
        """Deliver one firing the way Scheduler does: the target's Input, its context attributes
        filled in, to the target function. moto stores schedules but never fires them."""
        described = self.client("scheduler").get_schedule(GroupName=group, Name=name)
        if described.get("State") == "DISABLED":
            raise ValueError(f"schedule {group}/{name} is disabled: Scheduler would not fire it")
        target = described["Target"]
        when = (scheduled_time or self.clock.now()).replace(microsecond=0)
        event = json.loads(
            fill_context_attributes(
                target["Input"], schedule_arn=described["Arn"], scheduled_time=when, attempt=attempt
            )
        )
        result, errored = self.registry.invoke(target["Arn"], event)
        if errored:
            raise RuntimeError(f"the schedule's target failed: {result}")
        return result

    def execution_history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events += page["events"]
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "restarter runs in-process in local mode\n")
    return buffer.getvalue()
