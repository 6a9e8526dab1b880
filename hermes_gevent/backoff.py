"""The reconnection delay policy: pure arithmetic, no clock, no sleeping.

The client asks ``Backoff.delay(attempt, rng)`` how long to wait and waits on an
event that ``stop()`` and ``reconnect()`` can set, so no delay is ever waited out
blindly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .errors import ConfigError

__all__ = ["Backoff", "RandomSource", "check_delays", "check_number"]


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
        check_delays(self.initial, self.maximum, self.jitter, names=("Backoff.initial", "Backoff.maximum", "Backoff.jitter"))
        check_number("Backoff.factor", self.factor, allow_zero=False)
        if self.factor < 1:
            raise ConfigError(f"Backoff.factor must be >= 1, got {self.factor!r}.")

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


def check_number(name: str, value: Any, *, allow_zero: bool) -> None:
    """ConfigError (a ValueError) naming ``name`` unless ``value`` is a finite number >= 0
    (> 0 unless ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        wanted = "a number >= 0" if allow_zero else "a positive number of seconds"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")


def check_delays(initial: Any, maximum: Any, jitter: Any, *, names: tuple[str, str, str]) -> None:
    """The one validation of a backoff's numbers, naming them as the caller knows them
    (Backoff's fields, or the client's settings)."""
    check_number(names[0], initial, allow_zero=True)
    check_number(names[1], maximum, allow_zero=True)
    if maximum < initial:
        raise ConfigError(f"{names[1]} ({maximum}) must not be below {names[0]} ({initial}).")
    check_number(names[2], jitter, allow_zero=True)
    if jitter > 1:
        raise ConfigError(f"{names[2]} must be between 0 and 1, got {jitter!r}.")
