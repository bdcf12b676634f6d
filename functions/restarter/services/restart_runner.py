"""The work of each restart phase, one resumable step at a time.

The state machine calls `advance(phase, attempt)` until the phase says it is done, waiting in
`Wait` states between calls; nothing here sleeps. Each call looks at the real state of the
instances and the record, does the next thing, and writes progress. A call that is retried
after a transient error therefore picks up where the last one stopped.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from restarter.domain.errors import (
    PhaseFailedError,
    RestartCancelledError,
    RestarterError,
    RestartTimedOutError,
)
from restarter.domain.health import evaluate_health_report
from restarter.domain.inventory import CommandInvocation, InstanceView
from restarter.domain.models import (
    Cluster,
    ClusterSnapshot,
    ContainerSpec,
    Phase,
    PhaseEntry,
    RestartError,
    RestartRecord,
    VolumeInfo,
    failure_status,
    format_time,
    parse_time,
)
from restarter.domain.planning import max_polls, next_phase, poll_delay, progress_at
from restarter.observability import logger, metrics
from restarter.services.restart_intake import cluster_environment_parameter
from restarter.wiring import Dependencies

HEALTH_CHECK_ATTEMPTS = 3
# Cleanup waits at most this long for instances to come back before it gives up and leaves
# the cluster in `error` (recorded, lock released) for a person or the alarm recovery.
CLEANUP_BUDGET = timedelta(minutes=15)
CLEANUP_MAX_POLLS = 40


@dataclass(frozen=True)
class StepResult:
    done: bool
    attempt: int
    wait_seconds: int = 0
    next: str | None = None

    def to_output(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "attempt": self.attempt,
            "wait_seconds": self.wait_seconds,
            "next": self.next,
        }


class RestartRunner:
    def __init__(self, deps: Dependencies) -> None:
        self.deps = deps
        self.provider = deps.provider

    # ================================================================ entry points
    def advance(self, restart_id: str, phase: Phase, attempt: int) -> StepResult:
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        now = self.deps.clock.now()
        if attempt == 0:
            self._enter_phase(record, phase, now)
        state = record.phase_state.setdefault(phase, {})
        try:
            if phase != "ready":  # once health checks passed, the restart is done: no timeout, no cancel
                self._check_limits(record, phase, attempt, now)
            done = PHASES[phase](self, record, cluster, state, attempt)
        except Exception as exc:
            # Keep what went wrong and what this step had already done: a retry resumes from there
            # (never repeating an action on an instance), and cleanup knows what to undo.
            if isinstance(exc, RestarterError):
                state["failure"] = {"code": exc.code, "message": exc.message, "details": exc.details}
            else:
                state["failure"] = {"code": "INTERNAL", "message": type(exc).__name__, "details": {}}
            try:
                self._save(record, version, cluster)
            except Exception as save_error:  # the step's own error is the one the state machine must see
                logger.error("could not save a failed step", restart_id=record.id, error_type=type(save_error).__name__)
            raise
        if done:
            self._finish_phase(record, phase, self.deps.clock.now())
            following = None if phase == "ready" else next_phase(record.plan, phase)
            # A phase may ask the state machine to let things settle before the next one starts.
            settle = int(state.pop("settle_seconds", 0))
            result = StepResult(done=True, attempt=0, wait_seconds=settle, next=following)
        else:
            result = StepResult(done=False, attempt=attempt + 1, wait_seconds=poll_delay(phase, attempt))
        self._save(record, version, cluster)
        if phase == "ready" and done:
            self._release(record)
        return result

    @staticmethod
    def _check_limits(record: RestartRecord, phase: Phase, attempt: int, now: datetime) -> None:
        """The deadline, a cancellation, and a bound on polls even if the clock misbehaves."""
        if now > parse_time(record.deadline):
            raise RestartTimedOutError(
                f"Restart exceeded its timeout of {record.request.get('timeout_minutes', 15)} minutes",
                {"phase": phase, "deadline": record.deadline},
            )
        if record.cancel_requested_at:
            raise RestartCancelledError(
                f"Restart cancelled by {record.cancel_requested_by or 'a user'}",
                {"phase": phase, "cancel_requested_at": record.cancel_requested_at},
            )
        if attempt >= max_polls(int(record.request.get("timeout_minutes", 15))):
            raise PhaseFailedError(f"Phase {phase} did not finish", {"phase": phase, "polls": attempt})

    def cleanup(self, restart_id: str, error: dict[str, Any], attempt: int) -> StepResult:
        """Roll back what this restart changed, record the failure, release the lock."""
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        state = record.phase_state.setdefault("cleanup", {})
        if attempt == 0:
            state["started_at"] = format_time(self.deps.clock.now())
            self._record_failure(record, error)
            logger.warning(
                "restart failed, cleaning up",
                restart_id=record.id,
                cluster_id=record.cluster_id,
                error_code=record.error.code if record.error else None,
                phase=record.error.phase if record.error else None,
            )
        out_of_time = self.deps.clock.now() - parse_time(state["started_at"]) > CLEANUP_BUDGET
        if attempt >= CLEANUP_MAX_POLLS or out_of_time:
            record.rollback_notes.append("cleanup gave up waiting for the instances; cluster needs attention")
            state["gave_up"] = True
            done = True
        else:
            done = self._roll_back(record, cluster, state)
        if not done:
            self._save(record, version, cluster)
            return StepResult(done=False, attempt=attempt + 1, wait_seconds=poll_delay("rebooting", attempt))
        self._conclude_failure(record, cluster, state)
        self._save(record, version, cluster)
        self._release(record)
        return StepResult(done=True, attempt=0)

    def abandon(self, restart_id: str, error: dict[str, Any]) -> StepResult:
        """Last resort when cleanup itself failed: record it and release the lock."""
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        if record.error is None:
            self._record_failure(record, error)
        record.rollback_notes.append(f"cleanup failed: {_error_name(error)}; cluster needs attention")
        if record.status == "restarting":
            record.status = failure_status(record.error.code if record.error else None, rolled_back=False)
        record.restart_completed_at = record.restart_completed_at or format_time(self.deps.clock.now())
        cluster.status = "error"
        cluster.current_restart_id = None
        self._save(record, version, cluster)
        self._release(record)
        return StepResult(done=True, attempt=0)

    # ================================================================ phases
    def _stopping_processes(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int) -> bool:
        running = [i.instance_id for i in self._instances(cluster) if i.state == "running"]
        if "command_id" not in state:
            if not running:
                state["skipped"] = "no running instance"
                return True
            grace = int(record.request.get("grace_period_minutes", 5)) * 60
            record.downtime_started_at = record.downtime_started_at or format_time(self.deps.clock.now())
            state["command_id"] = self.provider.run_command(
                running, "stop_services", {"grace_seconds": grace}, timeout_seconds=grace + 60
            )
            state["instances"] = running
            return False
        return self._command_finished(state, "stopping_processes", "Graceful stop of services failed")

    def _creating_checkpoint(
        self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int
    ) -> bool:
        # One instance at a time, each recorded as soon as its snapshots exist: a retry after a
        # throttled call snapshots only the instances not done yet, under the same checkpoint.
        checkpoint_id = state.setdefault("checkpoint_id", f"snap_{secrets.token_hex(6)}")
        snapshots: dict[str, dict[str, str]] = state.setdefault("volume_snapshots", {})
        missing = [iid for iid in cluster.instance_ids if iid not in snapshots]
        if missing:
            tags = {
                "restarter:cluster": cluster.id,
                "restarter:restart": record.id,
                "restarter:checkpoint": checkpoint_id,
            }
            for instance_id in missing:
                snapshots[instance_id] = self.provider.create_checkpoint([instance_id], tags).get(instance_id, {})
            return False
        snapshot_ids = [s for devices in state["volume_snapshots"].values() for s in devices.values()]
        states = self.provider.snapshot_states(snapshot_ids)
        failed = sorted(s for s, st in states.items() if st == "error")
        if failed:
            raise PhaseFailedError("Checkpoint snapshot failed", {"snapshots": failed})
        if any(states.get(s) != "completed" for s in snapshot_ids):
            return False
        checkpoint = ClusterSnapshot(
            id=state["checkpoint_id"],
            name=f"checkpoint before {record.id}",
            created_at=format_time(self.deps.clock.now()),
            restart_id=record.id,
            volume_snapshots=state["volume_snapshots"],
        )
        cluster.snapshots.append(checkpoint)
        record.changes.checkpoint_id = checkpoint.id
        return True

    def _updating_configuration(
        self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int
    ) -> bool:
        """Restore root volumes, patch, grow storage, change the instance type, stage the container."""
        target = record.target
        steps = (
            (bool(target.restore_root_snapshots), "restore", self._restore_root_volumes),
            (target.apply_system_updates, "system_updates", self._apply_system_updates),
            (target.storage_gb is not None, "storage", self._grow_storage),
            (target.changes_instance_type(), "instance_type", self._change_instance_type),
            (target.changes_container(), "container", self._stage_container),
        )
        for wanted, name, step in steps:
            if not wanted or state.get(f"{name}_done"):
                continue
            sub = state.setdefault(name, {})
            if not step(record, cluster, sub):
                return False
            state[f"{name}_done"] = True
            if name != "container":  # container lines count as applied once the services run it
                self._mark_applied(record, name)
        return True

    def _restore_root_volumes(self, record: RestartRecord, cluster: Cluster, sub: dict[str, Any]) -> bool:
        tasks: dict[str, str] = sub.setdefault("tasks", {})
        missing = {iid: snap for iid, snap in record.target.restore_root_snapshots.items() if iid not in tasks}
        if missing:  # recorded task by task: a retried call never starts a second task for an instance
            for instance_id, snapshot_id in missing.items():
                tasks[instance_id] = self.provider.replace_root_volume(instance_id, snapshot_id)
            return False
        for iid, task_id in sub["tasks"].items():
            task_state = self.provider.replace_root_volume_states(iid, [task_id]).get(task_id, "pending")
            if task_state in ("failed", "failed-detached"):
                raise PhaseFailedError("Root volume replacement failed", {"instance_id": iid, "task_id": task_id})
            if task_state != "succeeded":
                return False
        record.changes.replaced_root_volumes = dict(sub["tasks"])
        return True

    def _apply_system_updates(self, record: RestartRecord, cluster: Cluster, sub: dict[str, Any]) -> bool:
        instances = self._instances(cluster)
        if "command_id" not in sub:
            stopped = [i.instance_id for i in instances if i.state == "stopped"]
            if stopped:  # patching needs running instances: a stopped cluster is started first
                self.provider.start(stopped)
                return False
            if not all(i.state == "running" for i in instances):
                return False
            sub["instances"] = [i.instance_id for i in instances]
            sub["command_id"] = self.provider.run_patch_baseline(sub["instances"])
            return False
        if not self._command_finished(sub, "updating_configuration", "System updates failed"):
            return False
        record.changes.system_updates_applied = True
        return True

    def _grow_storage(self, record: RestartRecord, cluster: Cluster, sub: dict[str, Any]) -> bool:
        size = record.target.storage_gb or 0
        if "volumes" not in sub:  # decided once, before any volume changes
            smaller = [v for v in cluster.data_volumes() if v.size_gb < size]
            sub["volumes"] = [v.volume_id for v in smaller]
            sub["requested"] = []
            for volume in smaller:
                record.changes.grown_volumes[volume.volume_id] = volume.size_gb
        if not sub["volumes"]:
            return True
        requested: list[str] = sub.setdefault("requested", [])
        missing = [v for v in sub["volumes"] if v not in requested]
        if missing:  # recorded volume by volume: a retry after a throttled call grows only the rest
            for volume_id in missing:
                self.provider.grow_volume(volume_id, size)
                requested.append(volume_id)
            return False
        states = self.provider.volume_modification_states(sub["volumes"])
        if any(states.get(v) == "failed" for v in sub["volumes"]):
            raise PhaseFailedError("Volume modification failed", {"volumes": sub["volumes"]})
        # `optimizing` already serves the new size.
        return all(states.get(v) in ("optimizing", "completed") for v in sub["volumes"])

    def _change_instance_type(self, record: RestartRecord, cluster: Cluster, sub: dict[str, Any]) -> bool:
        wanted = record.target.instance_type or cluster.instance_type
        pending = False
        for inst in self._instances(cluster):
            if inst.instance_type == wanted:
                continue
            record.changes.previous_instance_types.setdefault(inst.instance_id, inst.instance_type)
            pending = True
            if inst.state == "running":
                record.downtime_started_at = record.downtime_started_at or format_time(self.deps.clock.now())
                self.provider.stop([inst.instance_id], force=False)
            elif inst.state == "stopped":
                self.provider.modify_instance_type(inst.instance_id, wanted)
        return not pending

    def _stage_container(self, record: RestartRecord, cluster: Cluster, sub: dict[str, Any]) -> bool:
        """Write the desired container spec; the services start with it in `starting_services`."""
        target = record.target
        if record.changes.previous_container is None:
            record.changes.previous_container = cluster.container.model_copy(deep=True)
        spec = cluster.container.model_copy(deep=True)
        if target.image:
            spec.image = target.image
        if target.port_mappings is not None:
            spec.port_mappings = [p.model_copy() for p in target.port_mappings]
        if target.environment_keys_set or target.environment_keys_unset:
            parameter = spec.environment_parameter or cluster_environment_parameter(cluster.id)
            values = self.provider.get_environment(parameter, spec.environment_version)
            if target.environment_parameter:
                values.update(self.provider.get_environment(target.environment_parameter))
            for key in target.environment_keys_unset:
                values.pop(key, None)
            spec.environment_parameter = parameter
            spec.environment_version = self.provider.put_environment(parameter, values)
            spec.environment_keys = sorted(values)
        cluster.container = spec
        return True

    def _rebooting(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int) -> bool:
        """Reboot, power-cycle or start; then let the instances boot before services are started.

        A reboot leaves the instance `running` throughout, so there is nothing to poll here: the
        boot time is a settle wait (the vendor guide's 3 minutes), and `starting_services` polls
        status checks from there.
        """
        instances = self._instances(cluster)
        if "action" not in state:
            record.downtime_started_at = record.downtime_started_at or format_time(self.deps.clock.now())
            stopped = [i.instance_id for i in instances if i.state == "stopped"]
            running = [i.instance_id for i in instances if i.state == "running"]
            state["issued_at"] = format_time(self.deps.clock.now())
            if record.restart_type == "force" and running:
                self.provider.stop(running, force=True)
                state["action"] = "force_stop"
                return False
            if stopped:
                self.provider.start(stopped)
            if running:
                self.provider.reboot(running)
            state["action"] = "reboot" if running else "start"
            state["settle_seconds"] = poll_delay("rebooting", 0)
            return True
        if any(i.state != "stopped" for i in instances):
            return False
        self.provider.start([i.instance_id for i in instances])
        state["action"] = "start"
        state["settle_seconds"] = poll_delay("rebooting", 0)
        return True

    def _starting_services(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int) -> bool:
        if "command_id" not in state:
            if not self._instances_ready(cluster):
                return False
            state["command_id"] = self._start_services(cluster, cluster.container)
            state["instances"] = list(cluster.instance_ids)
            return False
        if not self._command_finished(state, "starting_services", "Starting services failed"):
            return False
        record.changes.container_applied = record.changes.previous_container is not None
        for mapping in cluster.container.port_mappings:
            mapping.status = "active"
        record.downtime_ended_at = format_time(self.deps.clock.now())
        self._mark_applied(record, "container")
        return True

    def _health_checks(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int) -> bool:
        if "command_id" not in state:
            instances = self._instances(cluster)
            not_ok = [i.instance_id for i in instances if not i.status_checks_ok]
            offline = [iid for iid, ok in self.provider.agents_online(cluster.instance_ids).items() if not ok]
            if not_ok or offline:
                return self._health_retry(state, {"status_checks_failed": not_ok, "ssm_agent_offline": offline})
            expected_gpus = record.target.instance_gpu_count or cluster.gpu_count
            state["command_id"] = self.provider.run_command(
                cluster.instance_ids,
                "health_check",
                {"ports": self._port_args(cluster.container), "expected_gpus": expected_gpus},
                timeout_seconds=120,
            )
            state["instances"] = list(cluster.instance_ids)
            return False
        invocations = self.provider.command_invocations(state["command_id"], state["instances"])
        if any(i.pending for i in invocations):
            return False
        problems: dict[str, list[str]] = {}
        expected_gpus = record.target.instance_gpu_count or cluster.gpu_count
        for inv in invocations:
            if inv.status != "Success":
                problems[inv.instance_id] = [f"health command {inv.status}"]
                continue
            health = evaluate_health_report(
                inv.instance_id,
                inv.stdout,
                expected_gpus=expected_gpus,
                expected_image=cluster.container.image,
                ports=cluster.container.port_mappings,
            )
            if not health.healthy:
                problems[inv.instance_id] = health.problems
        if problems:
            del state["command_id"]
            return self._health_retry(state, {"problems": problems})
        return True

    def _health_retry(self, state: dict[str, Any], problems: dict[str, Any]) -> bool:
        state["failures"] = int(state.get("failures", 0)) + 1
        state["last_problems"] = problems
        if state["failures"] >= HEALTH_CHECK_ATTEMPTS:
            raise PhaseFailedError("Health checks failed", problems)
        return False

    def _ready(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any], attempt: int) -> bool:
        now = self.deps.clock.now()
        record.status = "ready"
        self._close_record(record, now)
        target = record.target
        if target.instance_type:
            cluster.instance_type = target.instance_type
            cluster.vcpus = target.instance_vcpus or cluster.vcpus
            cluster.memory_gb = target.instance_memory_gb or cluster.memory_gb
            cluster.gpu_count = target.instance_gpu_count or cluster.gpu_count
            cluster.hourly_rate = record.new_hourly_rate
        cluster.volumes = self._volumes(cluster)
        cluster.status = "running"
        cluster.current_restart_id = None
        return True

    # ================================================================ failure and rollback
    def _record_failure(self, record: RestartRecord, error: dict[str, Any]) -> None:
        """Record the error now; the terminal status is set once cleanup has concluded."""
        name = _error_name(error)
        message = _error_message(error)
        # `States.Timeout` is one step running past its task timeout: a failure, not the restart's
        # own `timeout_minutes`. The `Execution*` names come from an execution that ended outside
        # the state machine's Catch (see services/ended_executions.py).
        code = {
            "RestartTimedOutError": "TIMED_OUT",
            "ExecutionTimedOut": "TIMED_OUT",
            "RestartCancelledError": "CANCELLED",
            "ExecutionAborted": "CANCELLED",
        }.get(name, "RESTART_FAILED")
        record.error = RestartError(
            code=code,
            message=message,
            phase=record.progress.phase,
            details={
                "error_type": name,
                **record.phase_state.get(record.progress.phase, {}).get("failure", {}).get("details", {}),
            },
        )
        record.progress = record.progress.model_copy(update={"current_step": f"Rolling back after: {message}"})
        for entry in record.phase_history:
            if entry.outcome == "in_progress":
                entry.outcome = "failed"
                entry.ended_at = format_time(self.deps.clock.now())
                entry.detail = message

    def _roll_back(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any]) -> bool:
        """Undo reversible changes: instance type, container spec; then bring services back."""
        changes = record.changes
        instances = self._instances(cluster)
        # 1. instance type back to what it was
        to_revert = {
            i.instance_id: changes.previous_instance_types[i.instance_id]
            for i in instances
            if i.instance_id in changes.previous_instance_types
            and i.instance_type != changes.previous_instance_types[i.instance_id]
        }
        if to_revert:
            for inst in instances:
                if inst.instance_id not in to_revert:
                    continue
                if inst.state == "running":
                    self.provider.stop([inst.instance_id], force=False)
                elif inst.state == "stopped":
                    self.provider.modify_instance_type(inst.instance_id, to_revert[inst.instance_id])
            state["reverted_instance_type"] = True
            return False
        # 2. the container spec back to what it was
        if changes.previous_container is not None and not state.get("container_reverted"):
            previous = changes.previous_container
            if previous.environment_parameter and previous.environment_version != cluster.container.environment_version:
                values = self.provider.get_environment(previous.environment_parameter, previous.environment_version)
                previous = previous.model_copy(
                    update={
                        "environment_version": self.provider.put_environment(previous.environment_parameter, values)
                    }
                )
            cluster.container = previous
            state["container_reverted"] = True
        # 3. instances that ran before run again, with the services they had
        if record.previous_cluster_status == "stopped":
            return True
        stopped = [i.instance_id for i in instances if i.state == "stopped"]
        if stopped:
            self.provider.start(stopped)
            return False
        if not self._instances_ready(cluster):
            return False
        if not state.get("services_command"):
            state["services_command"] = self._start_services(cluster, cluster.container)
            state["instances"] = list(cluster.instance_ids)
            return False
        invocations = self.provider.command_invocations(state["services_command"], state["instances"])
        if any(i.pending for i in invocations):
            return False
        state["services_restored"] = all(i.status == "Success" for i in invocations)
        return True

    def _conclude_failure(self, record: RestartRecord, cluster: Cluster, state: dict[str, Any]) -> None:
        changes = record.changes
        reverted = bool(changes.previous_instance_types) or changes.previous_container is not None
        record.status = failure_status(
            record.error.code if record.error else None, rolled_back=reverted and not state.get("gave_up")
        )
        if changes.grown_volumes:
            record.rollback_notes.append("storage growth cannot be undone (EBS volumes only grow)")
        if changes.system_updates_applied:
            record.rollback_notes.append("installed system updates were kept")
        if changes.replaced_root_volumes:
            record.rollback_notes.append("root volumes stay restored; the replaced volumes were kept")
        if record.changes.previous_instance_types:
            record.configuration_updates.applied = [
                line
                for line in record.configuration_updates.applied
                if line not in record.change_lines.get("instance_type", [])
            ]
        self._close_record(record, self.deps.clock.now())
        services_ok = bool(state.get("services_restored")) or record.previous_cluster_status == "stopped"
        if record.previous_cluster_status == "stopped" and not state.get("gave_up"):
            cluster.status = "stopped" if all(i.state == "stopped" for i in self._instances(cluster)) else "error"
        else:
            cluster.status = "running" if services_ok and not state.get("gave_up") else "error"
        cluster.volumes = self._volumes(cluster)
        cluster.current_restart_id = None

    # ================================================================ helpers
    def _instances(self, cluster: Cluster) -> list[InstanceView]:
        return self.provider.describe_instances(cluster.instance_ids)

    def _volumes(self, cluster: Cluster) -> list[VolumeInfo]:
        return [VolumeInfo.from_view(v) for v in self.provider.describe_volumes(cluster.instance_ids)]

    def _instances_ready(self, cluster: Cluster) -> bool:
        """Running, status checks passed, SSM agent online: ready to take commands."""
        if not all(i.status_checks_ok for i in self._instances(cluster)):
            return False
        return all(self.provider.agents_online(cluster.instance_ids).values())

    @staticmethod
    def _port_args(spec: ContainerSpec) -> list[dict[str, Any]]:
        return [
            {"internal_port": p.internal_port, "external_port": p.external_port, "protocol": p.protocol}
            for p in spec.port_mappings
        ]

    def _start_services(self, cluster: Cluster, spec: ContainerSpec) -> str:
        return self.provider.run_command(
            cluster.instance_ids,
            "start_services",
            {
                "image": spec.image,
                "ports": self._port_args(spec),
                "environment_parameter": spec.environment_parameter,
            },
            timeout_seconds=600,
        )

    def _command_finished(self, state: dict[str, Any], phase: str, failure: str) -> bool:
        invocations = self.provider.command_invocations(state["command_id"], state["instances"])
        if any(i.pending for i in invocations):
            return False
        failed = [i for i in invocations if i.status != "Success"]
        if failed:
            raise PhaseFailedError(failure, {"phase": phase, "instances": _failure_summary(failed)})
        return True

    def _mark_applied(self, record: RestartRecord, category: str) -> None:
        for line in record.change_lines.get(category, []):
            if line in record.configuration_updates.pending:
                record.configuration_updates.pending.remove(line)
                record.configuration_updates.applied.append(line)

    def _enter_phase(self, record: RestartRecord, phase: Phase, now: datetime) -> None:
        last = record.phase_history[-1] if record.phase_history else None
        if last is not None and last.phase == phase and last.outcome == "in_progress":
            return  # the state machine retried the phase's first step: entered and announced already
        record.progress = progress_at(record.plan, phase)
        record.phase_history.append(PhaseEntry(phase=phase, started_at=format_time(now)))
        logger.info("restart phase started", restart_id=record.id, cluster_id=record.cluster_id, phase=phase)
        self.deps.events.publish(
            "Restart Phase Changed",
            {
                "restart_id": record.id,
                "cluster_id": record.cluster_id,
                "phase": phase,
                "progress": record.progress.model_dump(),
            },
            resources=[record.cluster_id],
        )

    def _finish_phase(self, record: RestartRecord, phase: Phase, now: datetime) -> None:
        for entry in reversed(record.phase_history):
            if entry.phase == phase and entry.outcome == "in_progress":
                entry.ended_at = format_time(now)
                skipped = record.phase_state.get(phase, {}).get("skipped")
                entry.outcome = "skipped" if skipped else "succeeded"
                entry.detail = skipped
                break

    def _close_record(self, record: RestartRecord, now: datetime) -> None:
        record.restart_completed_at = format_time(now)
        started = parse_time(record.restart_initiated_at)
        record.restart_duration_seconds = int((now - started).total_seconds())
        if record.downtime_started_at:
            end = parse_time(record.downtime_ended_at) if record.downtime_ended_at else now
            record.downtime_seconds = int((end - parse_time(record.downtime_started_at)).total_seconds())

    def _release(self, record: RestartRecord) -> None:
        """Release the cluster's lock, then tell the audit trail and the event bus how it ended."""
        released = self.deps.locks.release(record.cluster_id, record.id)
        self._forget_pending_environment(record)
        outcome = record.status
        metrics.add_metric(name=f"Restarts_{outcome}", unit=MetricUnit.Count, value=1)
        if record.downtime_seconds is not None:
            metrics.add_metric(name="DowntimeSeconds", unit=MetricUnit.Seconds, value=record.downtime_seconds)
        logger.info(
            "restart finished",
            restart_id=record.id,
            cluster_id=record.cluster_id,
            status=outcome,
            lock_released=released,
            downtime_seconds=record.downtime_seconds,
        )
        self.deps.audit.record(
            record.cluster_id,
            "restart.finished",
            record.requested_by,
            outcome,
            self.deps.clock.now(),
            restart_id=record.id,
            applied=record.configuration_updates.applied,
            error=record.error.model_dump() if record.error else None,
            rollback_notes=record.rollback_notes,
        )
        self.deps.events.publish(
            "Restart Completed",
            {
                "restart_id": record.id,
                "cluster_id": record.cluster_id,
                "status": outcome,
                "downtime_seconds": record.downtime_seconds,
                "restart_duration_seconds": record.restart_duration_seconds,
                "error": record.error.model_dump() if record.error else None,
            },
            resources=[record.cluster_id],
        )

    def _forget_pending_environment(self, record: RestartRecord) -> None:
        """The request's environment values were merged into the cluster's parameter (or rolled
        back): the per-restart copy of the secrets has no further use."""
        if not record.target.environment_parameter:
            return
        try:
            self.provider.delete_environment(record.target.environment_parameter)
        except RestarterError as exc:
            logger.warning("pending environment not deleted", restart_id=record.id, error_code=exc.code)

    def _load(self, restart_id: str) -> tuple[RestartRecord, int]:
        loaded = self.deps.restarts.get(restart_id)
        if loaded is None:
            raise PhaseFailedError("Restart record not found", {"restart_id": restart_id})
        return loaded

    def _cluster(self, record: RestartRecord) -> Cluster:
        cluster = self.deps.clusters.get(record.cluster_id)
        if cluster is None:
            raise PhaseFailedError("Cluster record not found", {"cluster_id": record.cluster_id})
        return cluster

    def _save(self, record: RestartRecord, version: int, cluster: Cluster) -> None:
        cluster.updated_at = format_time(self.deps.clock.now())
        self.deps.restarts.put(record, version)
        self.deps.clusters.put(cluster)


PhaseStep = Any
PHASES: dict[str, PhaseStep] = {
    "stopping_processes": RestartRunner._stopping_processes,
    "creating_checkpoint": RestartRunner._creating_checkpoint,
    "updating_configuration": RestartRunner._updating_configuration,
    "rebooting": RestartRunner._rebooting,
    "starting_services": RestartRunner._starting_services,
    "health_checks": RestartRunner._health_checks,
    "ready": RestartRunner._ready,
}


def _error_name(error: dict[str, Any]) -> str:
    return str(error.get("Error") or error.get("error") or "UnknownError")


def _error_message(error: dict[str, Any]) -> str:
    """The message of a task failure; Lambda puts it, as JSON, in the Cause."""
    cause = error.get("Cause") or error.get("cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)[:500] or _error_name(error)
    if isinstance(parsed, dict):
        return str(parsed.get("errorMessage") or _error_name(error))[:500]
    return str(parsed)[:500]


def _failure_summary(failed: list[CommandInvocation]) -> list[dict[str, Any]]:
    return [
        {
            "instance_id": i.instance_id,
            "status": i.status,
            "response_code": i.response_code,
            "stderr": i.stderr[-300:],
        }
        for i in failed
    ]
