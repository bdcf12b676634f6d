"""moto compatibility: the pinned version, every patch target, and the patch registry's rules."""

from __future__ import annotations

import re
import sys
import time
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from restarter_local.moto_ext import (
    REGISTRY,
    SimulatedAgentState,
    active_state,
    compat,
    install_extensions,
    set_active_state,
    uninstall_extensions,
)
from restarter_local.moto_ext.registry import PatchError, PatchRegistry, adds, replaces, wraps

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


# -- the pinned moto and its patch targets ----------------------------------------------------------


def test_the_pinned_version_is_the_one_in_pyproject() -> None:
    local = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["local"]
    [pin] = [re.sub(r"\s", "", requirement) for requirement in local if requirement.startswith("moto")]
    assert pin.endswith(f"=={compat.PINNED_MOTO_VERSION}")


def test_the_installed_moto_is_the_pinned_one() -> None:
    assert compat.installed_moto_version() == compat.PINNED_MOTO_VERSION
    compat.require_pinned_moto()


def test_another_moto_version_is_refused_with_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "installed_moto_version", lambda: "9.9.9")
    with pytest.raises(compat.MotoVersionError, match=r"needs moto 5\.2\.5.*but moto 9\.9\.9 is installed"):
        compat.require_pinned_moto()


def test_the_listed_targets_are_exactly_the_registry_targets() -> None:
    listed = [(target.module, target.attribute) for target in compat.PATCH_TARGETS]
    assert len(listed) == len(set(listed))
    assert set(listed) == REGISTRY.targets()


def test_every_listed_target_matches_the_installed_moto() -> None:
    assert compat.target_problems(REGISTRY) == []


def test_the_two_status_check_wrappers_apply_in_their_declared_order() -> None:
    order = [patch.name for patch in REGISTRY.ordered()]
    assert order.index("ec2.never_healthy.instance_status") < order.index("timing.instance_status")
    assert order.index("ec2.never_healthy.system_status") < order.index("timing.system_status")


def test_uninstall_restores_moto_as_shipped_and_install_patches_it_again() -> None:
    from moto.core.responses import BaseResponse
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.instances import Instance
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    previous = active_state()
    try:
        install_extensions(SimulatedAgentState())
        original_call_action = BaseResponse.call_action.__wrapped__  # type: ignore[attr-defined]
        uninstall_extensions()
        assert BaseResponse.call_action is original_call_action
        assert not hasattr(EC2Backend, "create_replace_root_volume_task")
        assert "_state" not in Instance.__dict__
        assert retrier_decl.time is time
        install_extensions(SimulatedAgentState())
        assert REGISTRY.applied() == REGISTRY.ordered()
    finally:
        set_active_state(previous)


# -- the registry ---------------------------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[types.ModuleType]:
    """A throwaway module standing in for a moto module."""

    class Thing:
        def greet(self) -> str:
            return "hello"

    module = types.ModuleType("fake_moto_target")
    module.Thing = Thing  # type: ignore[attr-defined]
    module.answer = 42  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


def _loud(previous: object) -> object:
    def greet(self: object) -> str:
        return previous(self).upper()  # type: ignore[operator]

    return greet


def _excited(previous: object) -> object:
    def greet(self: object) -> str:
        return previous(self) + "!"  # type: ignore[operator]

    return greet


def test_dependencies_decide_the_order_and_declaration_order_the_rest(target: types.ModuleType) -> None:
    # given a wrapper declared before the patch it must follow
    registry = PatchRegistry(
        [
            wraps("excited", target.__name__, "Thing", "greet", "why", _excited, after=["loud"]),
            replaces("answer", target.__name__, "", "answer", "why", 7),
            wraps("loud", target.__name__, "Thing", "greet", "why", _loud),
        ]
    )
    # then it is applied after it, and the others keep their declaration order
    assert [patch.name for patch in registry.ordered()] == ["answer", "loud", "excited"]
    registry.apply()
    try:
        assert target.Thing().greet() == "HELLO!"
        assert target.answer == 7
    finally:
        registry.undo()


def test_apply_is_idempotent_and_undo_restores_the_originals(target: types.ModuleType) -> None:
    original = target.Thing.__dict__["greet"]
    registry = PatchRegistry(
        [
            wraps("loud", target.__name__, "Thing", "greet", "why", _loud),
            adds("wave", target.__name__, "Thing", "wave", "why", lambda self: "o/"),
        ]
    )
    registry.apply()
    patched = target.Thing.__dict__["greet"]
    registry.apply()
    assert target.Thing.__dict__["greet"] is patched
    assert [patch.name for patch in registry.applied()] == ["loud", "wave"]
    assert target.Thing().greet() == "HELLO"
    registry.undo()
    assert target.Thing.__dict__["greet"] is original
    assert not hasattr(target.Thing, "wave")
    assert not registry.is_applied()


def test_unknown_dependencies_and_cycles_are_refused_when_declared(target: types.ModuleType) -> None:
    with pytest.raises(PatchError, match="not declared"):
        PatchRegistry([wraps("loud", target.__name__, "Thing", "greet", "why", _loud, after=["nope"])])
    with pytest.raises(PatchError, match="cycle"):
        PatchRegistry(
            [
                wraps("a", target.__name__, "Thing", "greet", "why", _loud, after=["b"]),
                wraps("b", target.__name__, "Thing", "greet", "why", _loud, after=["a"]),
            ]
        )
    with pytest.raises(PatchError, match="twice"):
        PatchRegistry([replaces("x", target.__name__, "", "answer", "why", 1)] * 2)


def test_a_target_that_changed_fails_the_whole_apply(target: types.ModuleType) -> None:
    # given a patch adding what the target already has, after one that applies fine
    registry = PatchRegistry(
        [
            replaces("answer", target.__name__, "", "answer", "why", 7),
            adds("greet", target.__name__, "Thing", "greet", "why", lambda self: "hi"),
        ]
    )
    # then applying fails naming the target, and nothing stays patched
    with pytest.raises(PatchError, match=r"moto now has fake_moto_target\.Thing\.greet"):
        registry.apply()
    assert target.answer == 42
    assert not registry.is_applied()
    missing = PatchRegistry([replaces("gone", target.__name__, "Thing", "vanished", "why", 1)])
    with pytest.raises(PatchError, match=r"has no fake_moto_target\.Thing\.vanished"):
        missing.apply()
