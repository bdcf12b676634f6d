"""health_checks: status checks, SSM agent, then the health command's report on every instance.

A failed check is tried again (a GPU may still be initialising) up to HEALTH_CHECK_ATTEMPTS
times; then the phase fails and cleanup rolls the restart back.
"""

from __future__ import annotations

from typing import Any

from restarter.domain.errors import PhaseFailedError
from restarter.domain.health import evaluate_health_report
from restarter.services.restart.context import PhaseContext, port_args
from restarter.services.restart.state import CommandState

HEALTH_CHECK_ATTEMPTS = 3
HEALTH_COMMAND_TIMEOUT_SECONDS = 120


class HealthState(CommandState):
    failures: int = 0
    # what the last failed check found (shown when a restart is explained)
    last_problems: dict[str, Any] | None = None


def health_checks(ctx: PhaseContext[HealthState]) -> bool:
    state, record, cluster = ctx.state, ctx.record, ctx.cluster
    expected_gpus = record.target.instance_gpu_count or cluster.gpu_count
    if state.command_id is None:
        not_ok = [i.instance_id for i in ctx.instances() if not i.status_checks_ok]
        offline = [iid for iid, ok in ctx.provider.agents_online(cluster.instance_ids).items() if not ok]
        if not_ok or offline:
            return _try_again(state, {"status_checks_failed": not_ok, "ssm_agent_offline": offline})
        state.command_id = ctx.provider.run_command(
            cluster.instance_ids,
            "health_check",
            {"ports": port_args(cluster.container), "expected_gpus": expected_gpus},
            timeout_seconds=HEALTH_COMMAND_TIMEOUT_SECONDS,
        )
        state.instances = list(cluster.instance_ids)
        return False
    invocations = ctx.provider.command_invocations(state.command_id, state.instances)
    if any(i.pending for i in invocations):
        return False
    problems: dict[str, list[str]] = {}
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
        state.command_id = None
        return _try_again(state, {"problems": problems})
    return True


def _try_again(state: HealthState, problems: dict[str, Any]) -> bool:
    state.failures += 1
    state.last_problems = problems
    if state.failures >= HEALTH_CHECK_ATTEMPTS:
        raise PhaseFailedError("Health checks failed", problems)
    return False
