"""stopping_processes: ask the services to stop gracefully, within the caller's grace period."""

from __future__ import annotations

from restarter.services.restart.context import PhaseContext
from restarter.services.restart.state import CommandState

STOP_TIMEOUT_MARGIN_SECONDS = 60


class StopState(CommandState):
    pass


def stopping_processes(ctx: PhaseContext[StopState]) -> bool:
    state = ctx.state
    running = [i.instance_id for i in ctx.instances() if i.state == "running"]
    if state.command_id is None:
        if not running:
            state.skipped = "no running instance"
            return True
        grace = int(ctx.record.request.get("grace_period_minutes", 5)) * 60
        ctx.start_downtime()
        state.command_id = ctx.provider.run_command(
            running, "stop_services", {"grace_seconds": grace}, timeout_seconds=grace + STOP_TIMEOUT_MARGIN_SECONDS
        )
        state.instances = running
        return False
    return ctx.command_finished(
        state.command_id, state.instances, "stopping_processes", "Graceful stop of services failed"
    )
