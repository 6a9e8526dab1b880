"""The client's lifecycle: one state, checked transitions, each one logged.

Every status key about where the client stands (``running``, ``started``,
``stopping``, ``max_retries_reached``, ``autostart_pending``, ``state``) is derived
from ``Lifecycle.state``; nothing stores a second copy. A transition the table
does not allow is a bug and raises ``LifecycleError``.
"""

from __future__ import annotations

import enum
import logging
from typing import Callable, Optional

__all__ = ["Lifecycle", "LifecycleError", "OPEN", "State", "TRANSITIONS"]


class State(enum.Enum):
    IDLE = "idle"  # never started, or reset after a fork
    PENDING = "pending"  # waits for its first use in a serving process (start_on_first_use)
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing_off"
    GAVE_UP = "gave_up"
    STOPPING = "stopping"
    STOPPED = "stopped"


_RUN = frozenset({State.CONNECTING, State.OPEN, State.BACKING_OFF, State.GAVE_UP})
# Module-level names for the checks send_message makes per message: identity tests on these
# cost a few tens of nanoseconds, where Enum attribute lookups and hashing cost hundreds.
_PENDING, _STOPPING, _STOPPED, _GAVE_UP = State.PENDING, State.STOPPING, State.STOPPED, State.GAVE_UP
#: State.OPEN, for callers' per-message checks (``lifecycle.state is OPEN``): connected, neither pending nor ended.
OPEN = State.OPEN

#: state -> the states it may move to.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.PENDING, State.CONNECTING, State.STOPPED}),
    State.PENDING: frozenset({State.CONNECTING, State.STOPPED}),
    State.CONNECTING: frozenset({State.OPEN, State.BACKING_OFF, State.GAVE_UP, State.CONNECTING, State.STOPPING}),
    State.OPEN: frozenset({State.BACKING_OFF, State.GAVE_UP, State.CONNECTING, State.STOPPING}),
    State.BACKING_OFF: frozenset({State.CONNECTING, State.STOPPING}),
    State.GAVE_UP: frozenset({State.CONNECTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset({State.PENDING, State.CONNECTING, State.STOPPED}),
}


class LifecycleError(RuntimeError):
    """A transition the lifecycle does not allow (a bug in the library)."""


class Lifecycle:
    """Where one client stands. ``move`` checks and logs; ``reset`` (after a fork) does not check."""

    def __init__(self, log: Optional[Callable[[int, str], None]] = None) -> None:
        self.state = State.IDLE
        self._log = log

    def move(self, to: State, why: str = "") -> None:
        before = self.state
        if to not in TRANSITIONS[before]:
            raise LifecycleError(f"the client cannot go from {before.value} to {to.value}")
        self.state = to
        if self._log is not None and to is not before:
            self._log(logging.DEBUG, f"state {before.value} -> {to.value}{f' ({why})' if why else ''}")

    def reset(self, to: State) -> None:
        """After a fork: the parent's state means nothing in the child (unchecked, logged)."""
        before, self.state = self.state, to
        if self._log is not None:
            self._log(logging.DEBUG, f"state {before.value} -> {to.value} (reset after fork)")

    @property
    def started(self) -> bool:
        """Between start() and the end of stop() (stopping included)."""
        return self.state in _RUN or self.state is State.STOPPING

    @property
    def running(self) -> bool:
        """Started and not stopping: the loops are live and accept work."""
        return self.state in _RUN

    @property
    def stopping(self) -> bool:
        return self.state is _STOPPING

    @property
    def ended(self) -> bool:
        """Stopping or stopped: send_message() refuses."""
        state = self.state
        return state is _STOPPING or state is _STOPPED

    @property
    def gave_up(self) -> bool:
        return self.state is _GAVE_UP

    @property
    def pending(self) -> bool:
        return self.state is _PENDING
