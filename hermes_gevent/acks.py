"""Acknowledgements: which written messages the server has not confirmed, and when to resend.

``AckWindow`` is pure bookkeeping, tested without sockets or clocks: the caller passes the
time. It keeps every message written but not acknowledged, in the order of its first write,
at most MAX_UNACKED of them. After a lost connection every one of them is due again, in that
order, before anything newer; on a live connection one is due again once it has waited
ACK_TIMEOUT. An acknowledgement for an unknown id, or a repeated one, changes nothing.

The default wire convention (JSON objects with an id; ``{"ack": id}`` or ``{"ack": [ids]}``
back) is here too, as ``stamp_json`` and ``acked_ids_json``; a client subclass can define
another with its ``stamp`` and ``acked_ids`` hooks.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any, Callable, Iterable, Optional, Union

from .frames import Item

__all__ = ["AckWindow", "IdSource", "acked_ids_json", "stamp_json"]


class AckWindow:
    """Messages written and not yet acknowledged, by id, oldest first."""

    def __init__(self, max_unacked: int, ack_timeout: float) -> None:
        self.max_unacked = max_unacked
        self.ack_timeout = ack_timeout
        # id -> (item, last written at, or None: due now). Tuples, replaced rather than changed: the
        # collector stops tracking a tuple of untracked values, and these live until acknowledged.
        self._entries: dict[str, tuple[Item, Optional[float]]] = {}
        self._earliest: Optional[float] = None  # no entry is due before this (a lower bound)
        self.acked_total = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def room(self) -> int:
        """How many more messages may be written before acknowledgements come back."""
        return max(0, self.max_unacked - len(self._entries))

    def written(self, items: Iterable[Item], now: float) -> None:
        """``items`` (each with its id as the third field) reached the socket at ``now``."""
        entries = self._entries
        for item in items:
            ack_id = item[2]  # type: ignore[misc]
            if not ack_id:
                continue  # a message kept from a run without acknowledgements: nothing to wait for
            entry = entries.get(ack_id)
            entries[ack_id] = (item if entry is None else entry[0], now)  # a known id keeps its place
        if entries:
            self._may_be_due_at(now + self.ack_timeout)

    def rewritten(self, items: Iterable[Item], now: float) -> list[Item]:
        """Of ``items`` (from ``due``), those still unacknowledged - an acknowledgement may have
        come since - with their write time set to ``now``: what to write again."""
        entries, still = self._entries, []
        for item in items:
            entry = entries.get(item[2])  # type: ignore[misc]
            if entry is not None:
                entries[item[2]] = (entry[0], now)  # type: ignore[misc]
                still.append(item)
        if still:
            self._may_be_due_at(now + self.ack_timeout)
        return still

    def _may_be_due_at(self, deadline: float) -> None:
        """Keep ``_earliest`` a lower bound: an entry may now fall due at ``deadline``."""
        if self._earliest is None or self._earliest > deadline:
            self._earliest = deadline

    def acked(self, ids: Iterable[Any]) -> list[Item]:
        """Forget the acknowledged ids; return the messages that were waiting for them (unknown
        ids and repeats add nothing)."""
        entries, done = self._entries, []
        for ack_id in ids:
            entry = entries.pop(ack_id, None)
            if entry is not None:
                done.append(entry[0])
        self.acked_total += len(done)
        if not entries:
            self._earliest = None
        return done

    def connection_lost(self) -> None:
        """Nothing written on the lost connection counts any more: everything is due again."""
        entries = self._entries
        for ack_id, entry in entries.items():
            entries[ack_id] = (entry[0], None)  # an existing key: the dict does not resize
        self._earliest = float("-inf") if self._entries else None

    def next_due(self) -> Optional[float]:
        """No message is due before this time (None: nothing waits for an acknowledgement)."""
        return self._earliest

    def due(self, now: float) -> list[Item]:
        """The messages to send again now, oldest first: every one after a lost connection,
        else those written at least ACK_TIMEOUT ago."""
        if self._earliest is None or now < self._earliest:
            return []
        timeout, due, earliest = self.ack_timeout, [], None
        for item, written_at in self._entries.values():
            if written_at is None or now - written_at >= timeout:
                due.append(item)
            elif earliest is None or written_at + timeout < earliest:
                earliest = written_at + timeout
        self._earliest = earliest if not due else now  # resending rewrites their times
        return due

    def discard(self, doomed: Callable[[Item], bool]) -> list[Item]:
        """Forget, unacknowledged, the messages for which ``doomed(item)`` is true (another process
        sends them now); return them."""
        gone = [ack_id for ack_id, entry in self._entries.items() if doomed(entry[0])]
        items = [self._entries.pop(ack_id)[0] for ack_id in gone]
        if not self._entries:
            self._earliest = None
        return items

    def drain(self) -> list[Item]:
        """Every message still unacknowledged, oldest first; the window is empty afterwards."""
        items = [entry[0] for entry in self._entries.values()]
        self._entries.clear()
        self._earliest = None
        return items


class IdSource:
    """Message ids unique across processes and restarts: a random prefix, then a counter.
    ``reseed()`` after a fork, so a child never repeats its parent's ids."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


def stamp_json(message: Any, key: str, new_id: IdSource) -> tuple[dict[str, Any], str]:
    """A dict to send as JSON with a string id under ``key`` (the caller's own, as a string,
    when it has one); TypeError for anything else."""
    if not isinstance(message, dict):
        raise TypeError(
            f"with ACK_TIMEOUT set, send_message() takes a dict (sent as JSON with an id under "
            f"ACK_ID_KEY={key!r}), not {type(message).__name__}; override stamp() and acked_ids() "
            "for another convention"
        )
    if key in message:
        given = message[key]
        if isinstance(given, str):
            return message, given
        stamped = dict(message)
        stamped[key] = str(given)
        return stamped, stamped[key]
    ack_id = new_id()
    stamped = dict(message)
    stamped[key] = ack_id
    return stamped, ack_id


def acked_ids_json(message: Union[str, bytes]) -> Optional[list[Any]]:
    """The ids a server's ``{"ack": id}`` or ``{"ack": [ids]}`` acknowledges; None for any other message."""
    if not isinstance(message, str) or '"ack"' not in message or not message.lstrip().startswith("{"):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or "ack" not in parsed:
        return None
    value = parsed["ack"]
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    return None
