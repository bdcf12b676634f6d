"""rebooting: reboot, power-cycle (force) or start; or, for a recovery, the node ladder's rung.

A reboot leaves the instance `running` throughout, so there is nothing to poll here: the boot
time is a settle wait (the vendor guide's 3 minutes), and `starting_services` polls status
checks from there. A start that EC2 refuses for want of capacity (`InsufficientInstanceCapacity`,
common for scarce GPU types) is tried again with a growing wait until the deadline allows no
more; the restart then fails naming the stopped instances. A recovery's `node_action` decides
instead of the restart type:
`reset_gpu` resets every GPU through SSM (`nvidia-smi -r`, only when no process holds one;
if the reset is refused or fails, the instances are rebooted instead), `reboot` reboots even a
forced restart, and `stop_start` stops and starts the instances (EC2 moves them to new hosts).
"""

from __future__ import annotations

from typing import Literal

from restarter.domain.models import format_time
from restarter.domain.outcome import failure_summary
from restarter.domain.planning import poll_delay
from restarter.observability import logger
from restarter.services.restart.context import PhaseContext, start_instances
from restarter.services.restart.state import PhaseState

RebootAction = Literal["force_stop", "reboot", "start", "gpu_reset"]
GPU_RESET_TIMEOUT_SECONDS = 300
# the driver re-initialises the GPUs after a reset in seconds, not a boot's minutes
GPU_RESET_SETTLE_SECONDS = 15


class RebootState(PhaseState):
    action: RebootAction | None = None
    issued_at: str | None = None
    command_id: str | None = None
    instances: list[str] = []
    # why the GPU reset was not enough (the instances were rebooted instead)
    reset_fallback: str | None = None


def rebooting(ctx: PhaseContext[RebootState]) -> bool:
    state = ctx.state
    if state.action == "gpu_reset":
        return _reset_finished(ctx)
    instances = ctx.instances()
    if state.action is None:
        ctx.start_downtime()
        stopped = [i.instance_id for i in instances if i.state == "stopped"]
        running = [i.instance_id for i in instances if i.state == "running"]
        state.issued_at = format_time(ctx.now())
        node_action = ctx.record.node_action
        if node_action == "reset_gpu" and running and not stopped:
            state.command_id = ctx.provider.run_command(
                running, "reset_gpu", {"gpus": "all"}, timeout_seconds=GPU_RESET_TIMEOUT_SECONDS
            )
            state.instances, state.action = running, "gpu_reset"
            return False
        power_cycle = node_action == "stop_start" or (ctx.record.restart_type == "force" and node_action is None)
        if power_cycle and running:
            ctx.provider.stop(running, force=True)
            state.action = "force_stop"
            return False
        if stopped and not start_instances(ctx, stopped):
            return False  # no EC2 capacity for the type yet: try again (within the deadline)
        if running:
            ctx.provider.reboot(running)
        state.action = "reboot" if running else "start"
        state.settle_seconds = poll_delay("rebooting", 0)
        return True
    # a force stop was issued: start once every instance is stopped
    if any(i.state != "stopped" for i in instances):
        return False
    if not start_instances(ctx, [i.instance_id for i in instances]):
        return False  # no EC2 capacity for the type yet: try again (within the deadline)
    state.action = "start"
    state.settle_seconds = poll_delay("rebooting", 0)
    return True


def _reset_finished(ctx: PhaseContext[RebootState]) -> bool:
    state = ctx.state
    assert state.command_id is not None
    invocations = ctx.provider.command_invocations(state.command_id, state.instances)
    if any(i.pending for i in invocations):
        return False
    failed = [i for i in invocations if i.status != "Success"]
    if not failed:
        state.settle_seconds = GPU_RESET_SETTLE_SECONDS
        return True
    # a process still holds a GPU, or the reset itself failed: the next rung does it
    state.reset_fallback = f"GPU reset did not complete on {len(failed)} instance(s): rebooted instead"
    logger.warning("gpu reset failed, rebooting", restart_id=ctx.record.id, instances=failure_summary(failed))
    ctx.provider.reboot(state.instances)
    state.action = "reboot"
    state.settle_seconds = poll_delay("rebooting", 0)
    return True
