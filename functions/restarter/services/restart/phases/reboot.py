"""rebooting: reboot, power-cycle (force) or start; then let the instances boot.

A reboot leaves the instance `running` throughout, so there is nothing to poll here: the boot
time is a settle wait (the vendor guide's 3 minutes), and `starting_services` polls status
checks from there.
"""

from __future__ import annotations

from typing import Literal

from restarter.domain.models import format_time
from restarter.domain.planning import poll_delay
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.state import PhaseState

RebootAction = Literal["force_stop", "reboot", "start"]


class RebootState(PhaseState):
    action: RebootAction | None = None
    issued_at: str | None = None


def rebooting(ctx: PhaseContext[RebootState]) -> bool:
    state = ctx.state
    instances = ctx.instances()
    if state.action is None:
        ctx.start_downtime()
        stopped = [i.instance_id for i in instances if i.state == "stopped"]
        running = [i.instance_id for i in instances if i.state == "running"]
        state.issued_at = format_time(ctx.now())
        if ctx.record.restart_type == "force" and running:
            ctx.provider.stop(running, force=True)
            state.action = "force_stop"
            return False
        if stopped:
            ctx.provider.start(stopped)
        if running:
            ctx.provider.reboot(running)
        state.action = "reboot" if running else "start"
        state.settle_seconds = poll_delay("rebooting", 0)
        return True
    # a force stop was issued: start once every instance is stopped
    if any(i.state != "stopped" for i in instances):
        return False
    ctx.provider.start([i.instance_id for i in instances])
    state.action = "start"
    state.settle_seconds = poll_delay("rebooting", 0)
    return True
