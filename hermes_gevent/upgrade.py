"""The server's answer to the upgrade request, read by us: bounded, in chunks, pure.

websocket-client builds the request and validates the answer (status,
``Sec-WebSocket-Accept``): it does both well. But it reads the answer one byte per
``recv(1)``, and on a gevent socket with data waiting ``recv`` returns without
yielding: a server (or a broken proxy, a captive portal) that floods an endless
header line held the hub for 32 s and made the process buffer hundreds of MB. So
the answer is read here - ``UpgradeAnswer`` takes chunks and says when the head
is complete - and websocket-client is served the head from memory. Bytes after
the head (a server may send its first frames in the same packet as its 101) are
kept for the frame parser.

``headers_of`` gives the transport the answer's headers: a rejection carries them
(a ``Retry-After``: retry.py), and a 101 names the subprotocol the server chose,
which ``chosen_subprotocol`` checks against what we offered.

The limits are far above any real answer (a few hundred bytes, a dozen headers)
and far below what could hurt a worker.
"""

from __future__ import annotations

from typing import Optional, Sequence

from . import deflate
from .errors import AnswerTooLarge, ExtensionMismatch, SubprotocolMismatch

__all__ = ["agreed_compression", "chosen_subprotocol", "headers_of", "MAX_ANSWER_BYTES", "MAX_ANSWER_HEADERS", "UpgradeAnswer", "status_of"]

#: The status line and headers together, at most.
MAX_ANSWER_BYTES = 64 * 1024
#: Header lines after the status line, at most.
MAX_ANSWER_HEADERS = 100


class UpgradeAnswer:
    """Feed it what the socket gives; ``feed`` returns (head, rest) once the head is
    complete: everything up to and including the first blank line (a line empty once
    stripped of whitespace, as websocket-client reads it), and what came after it."""

    def __init__(self, max_bytes: int = MAX_ANSWER_BYTES, max_headers: int = MAX_ANSWER_HEADERS) -> None:
        self.max_bytes = max_bytes
        self.max_headers = max_headers
        self._buffer = bytearray()
        self._scanned = 0  # where the next line starts
        self._lines = 0

    def feed(self, data: bytes) -> Optional[tuple[bytes, bytes]]:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\n", self._scanned)
            if end < 0 or end >= self.max_bytes:
                break
            line = buffer[self._scanned:end]
            self._scanned = end + 1
            if not line.decode("utf-8", "replace").strip():  # as websocket-client decides a line is blank
                return bytes(buffer[: self._scanned]), bytes(buffer[self._scanned:])
            self._lines += 1
            if self._lines > self.max_headers + 1:  # the status line, then the headers
                raise AnswerTooLarge(f"the server's upgrade answer has more than {self.max_headers} header lines")
        if len(buffer) >= self.max_bytes:
            raise AnswerTooLarge(f"the server's upgrade answer is longer than {self.max_bytes // 1024} KiB")
        return None


def status_of(head: bytes) -> tuple[Optional[int], str]:
    """The HTTP status and reason of an answer's head ("HTTP/1.1 401 Unauthorized"), or
    (None, "") when its first line is not a status line."""
    line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None, ""
    return int(parts[1]), parts[2] if len(parts) > 2 else ""



def headers_of(head: bytes) -> dict[str, str]:
    """The header fields of an answer's head: names in lower case, values stripped; a field
    that comes more than once has its values joined with ", " (RFC 9110 5.3). Lines that
    are not ``name: value`` are skipped (websocket-client judges the answer itself)."""
    fields: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines()[1:]:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            continue
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


def agreed_compression(answer: dict[str, str], offered: bool) -> Optional[deflate.Agreement]:
    """What the server agreed to (``answer``: headers_of its 101) of the permessage-deflate
    ``offered`` (or not): None for no extension; ExtensionMismatch for an extension this client
    did not offer, or an answer it cannot honour (RFC 6455 9.1: the client must fail)."""
    agreed = answer.get("sec-websocket-extensions")
    if agreed is not None and agreed.strip() and not offered:
        raise ExtensionMismatch(f"the server agreed to extension {agreed[:80]!r}; this client offered none")
    return deflate.accept(agreed) if offered else None


def chosen_subprotocol(answer: dict[str, str], offered: Sequence[str]) -> Optional[str]:
    """The subprotocol the server chose (``answer``: headers_of its 101), None when it chose
    none; SubprotocolMismatch when it chose one that was not ``offered`` (RFC 6455 4.1: the
    client must fail the connection) - compared exactly: subprotocol names are case-sensitive."""
    chosen = answer.get("sec-websocket-protocol")
    if chosen is None:
        return None
    if chosen not in offered:
        raise SubprotocolMismatch(chosen, offered)
    return chosen
