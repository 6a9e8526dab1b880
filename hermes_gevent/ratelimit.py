"""MAX_SEND_RATE as a value: a token bucket, pure arithmetic on the times it is given.

The sender asks ``available(now)`` how many messages it may write now, writes at most
that many, and ``take``s them; when none may go, ``wait(now)`` says how long until one
may, and the sender waits that long on a timer (sender.py). No clock, no sleeping here:
tests give the times.

The bucket holds up to ``burst`` tokens (one second's worth: ``rate``, at least 1) and
gains ``rate`` tokens a second; it starts full. So over any interval of T seconds at
most ``rate * T + burst`` messages go: the long-run rate never exceeds ``rate``, and a
burst after a quiet second is at most one second's worth.
"""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["TokenBucket"]

#: Floating-point slack: a bucket refilled to 0.9999999999 tokens holds one.
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` (default: one second's worth, at least 1)."""

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"the send rate must be a positive number of messages per second, got {rate!r}.")
        self.rate = float(rate)
        self.burst = max(1.0, self.rate) if burst is None else float(burst)
        if not self.burst >= 1:
            raise ConfigError(f"the burst must be at least 1 message, got {burst!r}.")
        self._tokens = self.burst
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def available(self, now: float) -> int:
        """Whole messages that may go at ``now``."""
        self._refill(now)
        return int(self._tokens + _EPSILON)

    def take(self, count: int, now: float) -> None:
        """``count`` messages went at ``now``; ValueError for more than were available."""
        if count < 0 or count > self.available(now):
            raise ValueError(f"cannot take {count} token(s): {self._tokens:.3f} available")
        self._tokens = max(0.0, self._tokens - count)

    def wait(self, now: float, count: int = 1) -> float:
        """Seconds from ``now`` until ``count`` messages may go (0: they may now)."""
        if count > self.burst:
            raise ValueError(f"{count} message(s) can never go at once: the burst is {self.burst:g}")
        self._refill(now)
        missing = count - self._tokens - _EPSILON
        return max(0.0, missing / self.rate)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"
