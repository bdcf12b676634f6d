"""The moto these extensions are written against, and every moto internal they patch.

``restarter_local`` patches moto's internals, so it runs only on the moto version pinned in
pyproject.toml (``local`` extra): ``require_pinned_moto()`` refuses any other with one message.
To upgrade moto: change the pin and ``PINNED_MOTO_VERSION`` together (a test checks they
agree), then check each target below still exists (``present``) or is still missing
(``present=False``: moto lacked it and we add it) — ``target_problems()`` does it, and so does
tests/unit/test_moto_compat.py — and re-run the moto_ext and scenario tests.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import NamedTuple

from .registry import PatchRegistry

# The pin of `moto[...]` in pyproject.toml's `local` extra, copied here when the pin changes.
PINNED_MOTO_VERSION = "5.2.5"


class MotoVersionError(RuntimeError):
    """The installed moto is not the one restarter_local's patches are written against."""


class PatchTarget(NamedTuple):
    """A moto module and a dotted attribute path in it that some patch sets."""

    module: str
    attribute: str
    present: bool  # moto as shipped has it (False: we add it)


_CORE = "moto.core.responses"
_SSM_MODELS = "moto.ssm.models"
_SSM_RESPONSES = "moto.ssm.responses"
_EC2_MODELS = "moto.ec2.models"
_EC2_INSTANCES = "moto.ec2.models.instances"
_EC2_RESPONSES = "moto.ec2.responses"
_SFN = "moto.stepfunctions.parser"

PATCH_TARGETS: tuple[PatchTarget, ...] = (
    # throttling.py
    PatchTarget(_CORE, "BaseResponse.call_action", True),
    # ssm_ext.py
    PatchTarget(_SSM_MODELS, "SimpleSystemManagerBackend.send_command", True),
    PatchTarget(_SSM_MODELS, "Command.response_object", True),
    PatchTarget(_SSM_RESPONSES, "SimpleSystemManagerResponse.send_command", True),
    PatchTarget(_SSM_MODELS, "SimpleSystemManagerBackend.list_command_invocations", False),
    PatchTarget(_SSM_MODELS, "SimpleSystemManagerBackend.describe_instance_information", False),
    PatchTarget(_SSM_RESPONSES, "SimpleSystemManagerResponse.list_command_invocations", False),
    PatchTarget(_SSM_RESPONSES, "SimpleSystemManagerResponse.describe_instance_information", False),
    # ec2_ext.py (and ec2_timing_ext.py for the status checks)
    PatchTarget(_EC2_INSTANCES, "Instance.instance_status", True),
    PatchTarget(_EC2_INSTANCES, "Instance.system_status", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.create_snapshot", True),
    PatchTarget("moto.ec2.models.elastic_block_store", "Snapshot.volume_size", True),
    PatchTarget(_EC2_RESPONSES, "EC2Response.create_snapshots", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.create_replace_root_volume_task", False),
    PatchTarget(_EC2_MODELS, "EC2Backend.describe_replace_root_volume_tasks", False),
    PatchTarget(_EC2_RESPONSES, "EC2Response.create_replace_root_volume_task", False),
    PatchTarget(_EC2_RESPONSES, "EC2Response.describe_replace_root_volume_tasks", False),
    # ec2_timing_ext.py
    PatchTarget(_EC2_INSTANCES, "Instance._state", False),  # moto sets it per instance, not on the class
    PatchTarget(_EC2_INSTANCES, "Instance.start", True),
    PatchTarget(_EC2_INSTANCES, "Instance.stop", True),
    PatchTarget(_EC2_INSTANCES, "Instance.reboot", True),
    PatchTarget(_EC2_INSTANCES, "Instance.terminate", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.start_instances", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.stop_instances", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.reboot_instances", True),
    PatchTarget(_EC2_MODELS, "EC2Backend.modify_instance_attribute", True),
    PatchTarget(_EC2_RESPONSES, "EC2Response.stop_instances", True),
    # stepfunctions_shims.py
    PatchTarget("moto.awslambda_simple.models", "LambdaSimpleBackend.invoke", True),
    PatchTarget(f"{_SFN}.asl.component.state.wait.wait_function.wait_function", "WaitFunction._wait_interval", True),
    PatchTarget(f"{_SFN}.asl.component.common.retry.retrier_decl", "RetrierDecl._eval_body", True),
    PatchTarget(f"{_SFN}.asl.component.common.retry.retrier_decl", "time", True),
    PatchTarget(f"{_SFN}.models", "StepFunctionsParserBackend.start_execution", True),
    PatchTarget(f"{_SFN}.backend.execution", "BaseExecutionWorkerCommunication.terminated", True),
    # asl_cache.py
    PatchTarget(f"{_SFN}.asl.parse.asl_parser", "AmazonStateLanguageParser.parse", True),
    PatchTarget(f"{_SFN}.models", "StepFunctionsParserBackend._validate_definition", True),
    PatchTarget(f"{_SFN}.asl.utils.json_path", "parse", True),
)


def installed_moto_version() -> str | None:
    try:
        return metadata.version("moto")
    except metadata.PackageNotFoundError:
        return None


def require_pinned_moto() -> None:
    """Refuse to patch any moto but the pinned one (its internals are what we patch)."""
    installed = installed_moto_version()
    if installed != PINNED_MOTO_VERSION:
        raise MotoVersionError(
            f"restarter_local needs moto {PINNED_MOTO_VERSION} (it patches moto's internals), "
            f"but {'moto ' + installed if installed else 'no moto'} is installed; "
            f"install the pinned one: pip install 'moto=={PINNED_MOTO_VERSION}' (or pip install -e '.[local]')"
        )


def target_problems(registry: PatchRegistry) -> list[str]:
    """What no longer matches in the installed moto, one line per target (empty: all fine).

    Whether an attribute is present is judged on moto as shipped: the registry remembers it for
    targets it already patched in this process."""
    by_target = {patch.target: patch for patch in registry.declared()}
    problems = []
    for target in PATCH_TARGETS:
        where = f"{target.module}.{target.attribute}"
        patch = by_target.get((target.module, target.attribute))
        if patch is None:
            problems.append(f"{where}: listed here but no patch sets it")
            continue
        try:
            import_module(target.module)
            present = registry.shipped_has(patch)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{where}: cannot be resolved ({exc})")
            continue
        if present != target.present:
            problems.append(f"{where}: expected {'present' if target.present else 'absent'} in moto as shipped")
    return problems
