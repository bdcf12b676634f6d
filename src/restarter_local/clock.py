"""Simulated time for the embedded AWS, so that deadlines, waits and recorded durations agree.

Step Functions waits and retry backoff are scaled down by the engine's `time_scale`; this
clock runs at the same scale, per restart, so the handlers see the time the waits stand for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class ScaledClock:
    """Simulated time for the embedded AWS, per restart.

    Real time runs at its own pace; each restart's execution also moves its own clock forward
    by the full length of every Wait state and retry backoff it goes through, while it sleeps
    only `1/scale` of it. So durations, deadlines and timeouts come out the same whatever the
    machine's load, and concurrent restarts do not add up each other's waits. Code that runs
    for a restart (the step Lambda) reads that restart's clock; anything else reads the
    frontier, the furthest any restart has got.
    """

    def __init__(self, scale: float, origin: datetime | None = None) -> None:
        """`origin`: the simulated time at the start (default now), e.g. a sample event's firing time."""
        self.scale = scale
        self._origin = origin or datetime.now(UTC)
        self._start = time.monotonic()
        self._offsets: dict[str, float] = {}
        self._frontier = 0.0
        self._bound = threading.local()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        key = getattr(self._bound, "key", None)
        with self._lock:
            offset = self._offset(key)
        if key is None and getattr(self._bound, "in_invocation", False) and self._bound.first_seen is None:
            self._bound.first_seen = offset
        return self._origin + timedelta(seconds=time.monotonic() - self._start + offset)

    @contextmanager
    def invocation(self) -> Iterator[None]:
        """One Lambda invocation inside an execution: remember the first time it reads."""
        self._bound.in_invocation, self._bound.first_seen = True, None
        try:
            yield
        finally:
            self._bound.in_invocation, self._bound.first_seen = False, None

    def _offset(self, key: str | None) -> float:
        """A restart's own offset; a new restart starts at the frontier, which is also what
        everything outside a restart reads, so time never runs backwards for an observer."""
        if key is None:
            return self._frontier
        return self._offsets.setdefault(key, self._frontier)

    def begin(self, key: str) -> None:
        """Start `key`'s clock when its starter first read the time in this invocation (the
        intake computes the restart's deadline from it): on a busy machine the frontier moves
        on between that read and StartExecution, and the restart must not start past its deadline."""
        bound = getattr(self._bound, "key", None)
        with self._lock:
            seen = getattr(self._bound, "first_seen", None) if bound is None else None  # only inside an invocation
            self._offsets.setdefault(key, self._offset(bound) if seen is None else seen)

    def advance(self, key: str | None, seconds: float) -> None:
        if key and seconds > 0:
            with self._lock:
                self._offsets[key] = self._offset(key) + seconds
                self._frontier = max(self._frontier, self._offsets[key])

    def sleep(self, key: str | None, seconds: float) -> None:
        """Spend `seconds` of simulated time: sleep 1/scale of it, count all of it."""
        real = max(0.0, seconds) / self.scale
        time.sleep(real)
        self.advance(key, seconds - real)

    @contextmanager
    def bound_to(self, key: str | None) -> Iterator[None]:
        previous = getattr(self._bound, "key", None)
        self._bound.key = key
        try:
            yield
        finally:
            self._bound.key = previous
