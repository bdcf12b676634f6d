"""The one registry every moto patch goes through.

A ``Patch`` declares what it changes (a moto module, an object in it, an attribute), how (the
replacement, or a function building it from the value it wraps), why, and which other patches
it must come after. ``PatchRegistry.apply()`` applies all declared patches once per process, in
a deterministic order (those dependencies first, declaration order otherwise), checking that
each target still looks as the patch expects; ``undo()`` restores moto as shipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

PatchKind = Literal["wrap", "replace", "add"]
_MISSING = object()


class PatchError(RuntimeError):
    """A patch cannot be declared or applied (unknown dependency, cycle, changed moto)."""


@dataclass(frozen=True)
class Patch:
    """One change to moto: ``<module>.<owner>.<attribute>`` becomes the replacement.

    ``kind``: ``wrap`` builds the replacement from the current value (``wrap(previous)``), which
    it calls; ``replace`` swaps an existing attribute for ``value``; ``add`` sets an attribute
    moto lacks to ``value``. ``owner`` is a dotted path inside ``module`` ("" for the module
    itself). ``after`` names the patches that must be applied first (e.g. a wrapper of a
    wrapper)."""

    name: str
    module: str
    owner: str
    attribute: str
    why: str
    kind: PatchKind
    wrap: Callable[[Any], Any] | None = None
    value: Any = None
    after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.kind == "wrap") != (self.wrap is not None):
            raise PatchError(f"patch {self.name!r}: give `wrap` exactly when kind is 'wrap'")
        if self.kind != "wrap" and self.value is None:
            raise PatchError(f"patch {self.name!r}: kind {self.kind!r} needs a `value`")

    @property
    def target(self) -> tuple[str, str]:
        """(module path, dotted attribute path), e.g. ("moto.ec2.models.instances", "Instance.start")."""
        return self.module, f"{self.owner}.{self.attribute}" if self.owner else self.attribute

    def resolve_owner(self) -> Any:
        """The object the attribute is set on (ImportError / AttributeError if moto changed)."""
        owner: Any = import_module(self.module)
        for part in filter(None, self.owner.split(".")):
            owner = getattr(owner, part)
        return owner


def wraps(
    name: str,
    module: str,
    owner: str,
    attribute: str,
    why: str,
    wrap: Callable[[Any], Any],
    *,
    after: Iterable[str] = (),
) -> Patch:
    """A patch whose replacement calls the value it replaces (``wrap(previous)`` builds it)."""
    return Patch(name, module, owner, attribute, why, "wrap", wrap=wrap, after=tuple(after))


def replaces(name: str, module: str, owner: str, attribute: str, why: str, value: Any) -> Patch:
    """A patch that swaps an attribute moto has for ``value``."""
    return Patch(name, module, owner, attribute, why, "replace", value=value)


def adds(name: str, module: str, owner: str, attribute: str, why: str, value: Any) -> Patch:
    """A patch that gives moto an attribute it lacks."""
    return Patch(name, module, owner, attribute, why, "add", value=value)


@dataclass(frozen=True)
class _Applied:
    patch: Patch
    owner: Any
    own_value: Any  # the owner's own attribute before the patch (_MISSING: inherited or absent)


class PatchRegistry:
    """Declared patches, applied all together, once, in dependency order."""

    def __init__(self, patches: Iterable[Patch] = ()) -> None:
        self._declared: dict[str, Patch] = {}
        self._applied: list[_Applied] = []
        self._shipped: dict[tuple[str, str], bool] = {}
        self._lock = threading.RLock()
        self.declare(*patches)

    def declare(self, *patches: Patch) -> None:
        with self._lock:
            if self._applied:
                raise PatchError("declare every patch before applying the registry")
            for patch in patches:
                if patch.name in self._declared:
                    raise PatchError(f"patch {patch.name!r} is declared twice")
                self._declared[patch.name] = patch
            self.ordered()  # fail at declaration on unknown dependencies or cycles

    def declared(self) -> list[Patch]:
        return list(self._declared.values())

    def targets(self) -> set[tuple[str, str]]:
        """Every (module path, attribute path) some patch changes."""
        return {patch.target for patch in self._declared.values()}

    def ordered(self) -> list[Patch]:
        """The application order: each patch after those it names in ``after``, otherwise in
        declaration order (a stable topological sort)."""
        for patch in self._declared.values():
            for dependency in patch.after:
                if dependency not in self._declared:
                    raise PatchError(f"patch {patch.name!r} must follow {dependency!r}, which is not declared")
        order: list[Patch] = []
        done: set[str] = set()
        pending = list(self._declared.values())
        while pending:
            ready = next((p for p in pending if all(d in done for d in p.after)), None)
            if ready is None:
                raise PatchError(f"patches depend on each other in a cycle: {sorted(p.name for p in pending)}")
            pending.remove(ready)
            order.append(ready)
            done.add(ready.name)
        return order

    def applied(self) -> list[Patch]:
        """The patches in effect, in the order they were applied."""
        return [entry.patch for entry in self._applied]

    def is_applied(self) -> bool:
        return bool(self._applied)

    def shipped_has(self, patch: Patch) -> bool:
        """Whether moto as shipped has the patch's target attribute (before any of our patches)."""
        recorded = self._shipped.get(patch.target)
        return recorded if recorded is not None else hasattr(patch.resolve_owner(), patch.attribute)

    def apply(self) -> None:
        """Apply every declared patch (idempotent: a second call changes nothing). On any failure
        the patches already applied are undone and the error names the patch."""
        with self._lock:
            if self._applied:
                return
            try:
                for patch in self.ordered():
                    self._apply_one(patch)
            except BaseException:
                self.undo()
                raise

    def _apply_one(self, patch: Patch) -> None:
        try:
            owner = patch.resolve_owner()
        except (ImportError, AttributeError) as exc:
            raise PatchError(f"patch {patch.name!r}: moto has no {'.'.join(patch.target)} any more") from exc
        current = getattr(owner, patch.attribute, _MISSING)
        self._shipped.setdefault(patch.target, current is not _MISSING)
        if patch.kind == "add" and current is not _MISSING and not self._patched_by_us(patch):
            raise PatchError(f"patch {patch.name!r}: moto now has {'.'.join(patch.target)}; review the patch")
        if patch.kind != "add" and current is _MISSING:
            raise PatchError(f"patch {patch.name!r}: moto has no {'.'.join(patch.target)} any more")
        replacement = patch.wrap(current) if patch.wrap is not None else patch.value
        self._applied.append(_Applied(patch, owner, owner.__dict__.get(patch.attribute, _MISSING)))
        setattr(owner, patch.attribute, replacement)

    def _patched_by_us(self, patch: Patch) -> bool:
        return any(entry.patch.target == patch.target for entry in self._applied)

    def undo(self) -> None:
        """Restore every patched attribute, last applied first (moto as shipped)."""
        with self._lock:
            while self._applied:
                entry = self._applied.pop()
                if entry.own_value is _MISSING:
                    delattr(entry.owner, entry.patch.attribute)
                else:
                    setattr(entry.owner, entry.patch.attribute, entry.own_value)
