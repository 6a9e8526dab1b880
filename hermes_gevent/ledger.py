"""Which written messages the server's TCP has not acknowledged yet.

After an abrupt failure (no close handshake) the messages whose bytes are still
in the kernel's send queue never reached the server: they are sent again. The
kernel tells how many bytes that is (Linux: the TIOCOUTQ ioctl, plain TCP only);
the ledger maps those last bytes back to the messages they carried.
"""

from __future__ import annotations

import collections
import struct
from typing import Any, Optional

try:  # Linux and most Unixes: the TCP send queue's unacknowledged byte count
    import fcntl
    import termios

    TIOCOUTQ: Optional[int] = getattr(termios, "TIOCOUTQ", None)
except ImportError:  # pragma: no cover - Windows
    TIOCOUTQ = None

__all__ = ["Entry", "KernelLedger", "SEND_LIMIT", "TIOCOUTQ", "TRIM_EVERY", "unacknowledged_bytes", "whole_frames"]

#: One ledger entry: the messages of one write call (None for control frames and the
#: pieces of a large frame before its last), their byte counts, and their total.
Entry = tuple[list[Any], list[int], int]


def _kernel_send_limit() -> int:
    """The most bytes a TCP send queue can hold here (Linux: tcp_wmem's maximum)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 2**20


#: Read once at import: the ledger never needs to remember more than this.
SEND_LIMIT = _kernel_send_limit()
#: The ledger asks the kernel what TCP acknowledged once it holds this many writes.
TRIM_EVERY = 64


def unacknowledged_bytes(fileno: int) -> Optional[int]:
    """Bytes in the kernel's send queue that the peer has not acknowledged (None if unknown)."""
    if TIOCOUTQ is None:
        return None
    try:
        count: int = struct.unpack("i", fcntl.ioctl(fileno, TIOCOUTQ, b"\0\0\0\0"))[0]
        return count
    except (OSError, ValueError):
        return None


def whole_frames(lengths: list[int], sent: int) -> tuple[int, int]:
    """Of frames of ``lengths`` bytes written in order, how many the first ``sent`` bytes hold
    whole, and those frames' bytes."""
    whole, taken = 0, 0
    while whole < len(lengths) and taken + lengths[whole] <= sent:
        taken += lengths[whole]
        whole += 1
    return whole, taken


class KernelLedger:
    """The last writes handed to the kernel, newest last: one entry per write call."""

    def __init__(self, limit: int = SEND_LIMIT) -> None:
        self.entries: collections.deque[Entry] = collections.deque()
        self.size = 0
        self.limit = limit

    def record(self, items: list[Any], lengths: list[int]) -> None:
        total = sum(lengths)
        self.entries.append((items, lengths, total))
        self.size += total
        while self.size > self.limit and len(self.entries) > 1:
            self.size -= self.entries.popleft()[2]

    def record_written(self, items: list[Any], lengths: list[int], sent: int) -> tuple[int, int]:
        """A write took the first ``sent`` bytes of the frames of ``items``: ledger the messages it
        took whole, and the bytes of a cut-off frame without its message (an incomplete frame is
        never delivered: its message stays with the caller). Returns how many went whole, and their
        bytes (whole_frames)."""
        whole, taken = whole_frames(lengths, sent)
        done_items, done_lengths = items[:whole], lengths[:whole]
        if sent > taken:
            done_items.append(None)
            done_lengths.append(sent - taken)
        if done_items:
            self.record(done_items, done_lengths)
        return whole, taken

    def trim_from(self, sock: Any) -> None:
        """Past TRIM_EVERY writes, forget what ``sock``'s TCP acknowledged: one ioctl per TRIM_EVERY."""
        if len(self.entries) > TRIM_EVERY:
            outq = unacknowledged_bytes(sock.fileno())
            if outq is not None:
                self.trim(outq)

    def trim(self, outq: int) -> None:
        """Forget the oldest writes the peer has acknowledged (all but the last ``outq`` bytes)."""
        entries = self.entries
        while entries and self.size - entries[0][2] >= outq:
            self.size -= entries.popleft()[2]

    def unacknowledged(self, outq: int) -> list[Any]:
        """The messages (oldest first) covering the last ``outq`` bytes written."""
        found: list[Any] = []
        for items, lengths, _ in reversed(self.entries):
            for index in range(len(items) - 1, -1, -1):
                if outq <= 0:
                    found.reverse()
                    return found
                if items[index] is not None:
                    found.append(items[index])
                outq -= lengths[index]
        found.reverse()
        return found
