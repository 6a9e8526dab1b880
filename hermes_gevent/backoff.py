"""The reconnection delay policy: pure arithmetic, no clock, no sleeping.

The client asks ``Backoff.delay(attempt, rng)`` how long to wait and waits on an
event that ``stop()`` and ``reconnect()`` can set, so no delay is ever waited out
blindly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Protocol


class RandomSource(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, as an immutable value.

    ``delay(n)`` is ``min(initial * factor**n, maximum)`` shortened by a random
    fraction of up to ``jitter`` of itself: with the default ``jitter=0.5`` the
    delay falls in ``[base / 2, base]``, so a fleet of workers that lost their
    server at the same instant do not come back at the same instant.
    ``jitter=0`` makes delays exact (for tests and for a single client).
    """

    initial: float = 3.0
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ValueError("Backoff.initial must be >= 0")
        if self.maximum < self.initial:
            raise ValueError("Backoff.maximum must be >= Backoff.initial")
        if self.factor < 1:
            raise ValueError("Backoff.factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff.jitter must be between 0 and 1")

    def base_delay(self, attempt: int) -> float:
        """The delay before jitter for the attempt numbered ``attempt`` (0 first)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Stop multiplying once past the cap: factor**attempt overflows for large attempts.
        delay = self.initial
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def delay(self, attempt: int, rng: RandomSource = random) -> float:
        """Seconds to wait before the attempt numbered ``attempt`` (0 first)."""
        base = self.base_delay(attempt)
        if not self.jitter:
            return base
        return base * (1.0 - self.jitter * rng.random())

    def delays(self, count: int, rng: RandomSource = random) -> list[float]:
        """The first ``count`` delays, as a list (handy in docs and tests)."""
        return [self.delay(n, rng) for n in range(count)]

    def with_(self, **changes: float) -> "Backoff":
        """A copy with some fields changed (the value itself never changes)."""
        return replace(self, **changes)
