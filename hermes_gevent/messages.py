"""What the client accepts to send, and how it counts what it could not deliver.

``encode`` turns a message into the (opcode, payload) the send queue holds, raising
in the caller for anything that cannot be sent. ``Drops`` counts every message that
was accepted and then lost, by reason, reports them in rate-limited log lines, and
hands each to the ``on_drop`` hook - never in the hub, where user code must not run.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional, Union

import gevent

from . import frames
from .logs import ClientLog, RateLimitedCounter
from .frames import Item
from .outbox import in_hub

__all__ = ["decode", "DROP_LOG_PERIOD", "Drops", "encode", "Message"]

Message = Union[str, bytes, bytearray, memoryview, "dict[str, Any]", "list[Any]"]
#: How long a drop summary line waits before repeating.
DROP_LOG_PERIOD = 10.0
#: What json.dumps(msg, separators=(",", ":")) writes, in one call to the C encoder json builds for
#: each dumps (built once here: json.dumps with arguments costs twice as much). No circular-reference
#: markers (a dict shared across calls would be): a cycle ends in RecursionError, turned into ValueError,
#: after recursing to the interpreter's limit (a rare error's cost, paid only by the message at fault).
_JSON = json.JSONEncoder(separators=(",", ":"))
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)  # the typeshed stubs do not declare it
_json_chunks = (_c_make_encoder(None, _JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",", False,
                                False, True) if _c_make_encoder is not None else None)


def _json(msg: Any) -> str:
    try:
        if _json_chunks is None:  # pragma: no cover - CPython has the C encoder
            return _JSON.encode(msg)
        return "".join(_json_chunks(msg, 0))
    except RecursionError:
        raise ValueError("message is not JSON: it refers to itself (or nests too deep)") from None


_OP_TEXT, _OP_BINARY = frames.OP_TEXT, frames.OP_BINARY  # a global read per message, not a module attribute's


def encode(msg: Message, max_size: int) -> tuple[int, bytes]:
    """str -> text frame, bytes-like -> binary frame, dict/list -> JSON text frame.
    TypeError or ValueError here, in the caller, for a message that cannot be sent."""
    if isinstance(msg, str):
        try:
            payload = msg.encode()  # UTF-8
        except UnicodeEncodeError as exc:
            raise ValueError(f"message is not valid Unicode text: {exc}") from None
        opcode = _OP_TEXT
    elif isinstance(msg, (bytes, bytearray, memoryview)):
        payload, opcode = msg if type(msg) is bytes else bytes(msg), _OP_BINARY  # bytes(msg) costs even when it is msg
    elif isinstance(msg, (dict, list)):
        payload, opcode = _json(msg).encode("utf-8"), _OP_TEXT
    else:
        raise TypeError(f"send_message() takes str, bytes, dict or list, not {type(msg).__name__}")
    if len(payload) > max_size:
        raise ValueError(f"message of {len(payload)} bytes exceeds MAX_MESSAGE_SIZE={max_size}")
    return opcode, payload


def decode(item: Item) -> Union[str, bytes]:
    """The message as the application gave it (dicts and lists as their JSON text)."""
    payload = item[1]
    return payload.decode("utf-8") if item[0] == frames.OP_TEXT else payload


class Drops:
    """Messages accepted and then lost: the total, by reason, the log lines, the hook."""

    def __init__(self, log: ClientLog, on_drop: Callable[[Union[str, bytes], str], Any],
                 on_count: Optional[Callable[[str], None]] = None) -> None:
        self.total = 0
        self._on_count = on_count  # the metrics' counter, by reason (None: metrics off)
        self.by_reason: dict[str, int] = {}
        self._log = log
        self._on_drop = on_drop
        self._rate = RateLimitedCounter(DROP_LOG_PERIOD)

    def count(self, item: Item, reason: str, *, log: bool = True) -> None:
        self.total += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if self._on_count is not None:
            self._on_count(reason)
        reported = self._rate.add(time.monotonic()) if log else 0
        if reported:
            self._log.warning(f"dropped {reported} message(s) ({self.summary()}); see status()['messages_dropped']")
        if in_hub():
            gevent.spawn(self._on_drop, decode(item), reason)  # user code never runs in the hub
        else:
            self._on_drop(decode(item), reason)

    def report_pending(self) -> None:
        """Log the drops the rate limit held back (the health loop calls this)."""
        pending = self._rate.flush()
        if pending:
            self._log.warning(f"{pending} more message(s) dropped ({self.summary()})")

    def summary(self) -> str:
        return ", ".join(f"{reason}: {n}" for reason, n in sorted(self.by_reason.items()))
