"""Client settings: class constants, their lower-case keyword twins, validation.

A subclass sets ``MAX_QUEUE_SIZE = 100``; a plain ``WebSocketClient`` takes
``max_queue_size=100``. The keyword is the constant's name in lower case, with
the ``DEFAULT_`` prefix optional (``retry_limit`` or ``default_retry_limit``).
Validation raises ConfigError with one sentence that names the setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ConfigError

OVERFLOW_STRATEGIES = ("drop_oldest", "drop_newest", "raise")


@dataclass(frozen=True)
class Settings:
    DEFAULT_RETRY_LIMIT: int | None = 500
    DEFAULT_RETRY_DELAY: float = 3
    MAX_RETRY_DELAY: float = 30
    RETRY_JITTER: float = 0.5
    MAX_QUEUE_SIZE: int = 10000
    QUEUE_OVERFLOW_STRATEGY: str = "drop_oldest"
    MAX_THREAD_WAIT_TIME: float = 10
    HEALTH_CHECK_INTERVAL: float = 60
    CONNECT_TIMEOUT: float = 10
    PING_INTERVAL: float = 20
    PING_TIMEOUT: float = 10
    MIN_UPTIME: float = 5
    MAX_MESSAGE_SIZE: int = 16 * 2**20

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def keyword_map(cls) -> dict[str, str]:
        """Every accepted keyword -> the constant it sets."""
        mapping = {}
        for name in cls.names():
            mapping[name.lower()] = name
            if name.startswith("DEFAULT_"):
                mapping[name[len("DEFAULT_"):].lower()] = name
        return mapping

    @classmethod
    def resolve(cls, owner: type, keywords: Mapping[str, Any]) -> "Settings":
        """Class constants of ``owner`` overridden by ``keywords``, validated."""
        values = {name: getattr(owner, name, getattr(cls, name)) for name in cls.names()}
        mapping = cls.keyword_map()
        for key, value in keywords.items():
            values[mapping[key]] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        _number("DEFAULT_RETRY_DELAY", self.DEFAULT_RETRY_DELAY, allow_zero=True)
        _number("MAX_RETRY_DELAY", self.MAX_RETRY_DELAY, allow_zero=True)
        if self.MAX_RETRY_DELAY < self.DEFAULT_RETRY_DELAY:
            raise ConfigError(
                f"MAX_RETRY_DELAY ({self.MAX_RETRY_DELAY}) must not be below DEFAULT_RETRY_DELAY ({self.DEFAULT_RETRY_DELAY})."
            )
        _number("RETRY_JITTER", self.RETRY_JITTER, allow_zero=True)
        if self.RETRY_JITTER > 1:
            raise ConfigError(f"RETRY_JITTER must be between 0 and 1, got {self.RETRY_JITTER!r}.")
        if self.DEFAULT_RETRY_LIMIT is not None:
            _integer("DEFAULT_RETRY_LIMIT", self.DEFAULT_RETRY_LIMIT, "a positive integer or None (never give up)")
        _integer("MAX_QUEUE_SIZE", self.MAX_QUEUE_SIZE, "a positive integer")
        _integer("MAX_MESSAGE_SIZE", self.MAX_MESSAGE_SIZE, "a positive integer")
        if self.QUEUE_OVERFLOW_STRATEGY not in OVERFLOW_STRATEGIES:
            raise ConfigError(
                f"QUEUE_OVERFLOW_STRATEGY must be one of {', '.join(OVERFLOW_STRATEGIES)}; "
                f"got {self.QUEUE_OVERFLOW_STRATEGY!r}."
            )
        for name in ("MAX_THREAD_WAIT_TIME", "HEALTH_CHECK_INTERVAL", "CONNECT_TIMEOUT", "PING_INTERVAL", "PING_TIMEOUT"):
            _number(name, getattr(self, name), allow_zero=False)
        _number("MIN_UPTIME", self.MIN_UPTIME, allow_zero=True)


def _number(name: str, value: Any, *, allow_zero: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        wanted = "a number >= 0" if allow_zero else "a positive number of seconds"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")


def _integer(name: str, value: Any, wanted: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")
