"""Text checked as UTF-8 while it arrives, not once the message is complete.

RFC 6455 8.1 asks a client to fail the connection as soon as the bytes of a text message are
invalid. A message in one frame that arrived whole is decoded once by the parser (the common
case, untouched here); these two cover the rest:

    TextFragments   the fragments of one text message, each decoded as it comes (no second
                    pass at the end: the message is the decoded pieces joined)
    PartialFrame    the start of a text frame still arriving over several reads, checked as it
                    grows (each byte once), so an invalid byte fails the connection before the
                    frame's end arrives - or never does

An incomplete character at the end of what arrived is not an error; an impossible byte is.
"""

from __future__ import annotations

import codecs
from typing import Optional, Union

from .errors import ProtocolError

__all__ = ["CLOSE_INVALID_DATA", "PartialFrame", "TextFragments", "invalid"]

CLOSE_INVALID_DATA = 1007
_Decoder = codecs.getincrementaldecoder("utf-8")
_Bytes = Union[bytes, bytearray, memoryview]


def invalid() -> ProtocolError:
    return ProtocolError(CLOSE_INVALID_DATA, "text message is not valid UTF-8")


def _decode(decoder: codecs.IncrementalDecoder, data: _Bytes, final: bool) -> str:
    try:
        return decoder.decode(data, final)
    except UnicodeDecodeError:
        raise invalid() from None


class TextFragments:
    """One fragmented text message: ``add`` each fragment's bytes, ``text()`` at the end."""

    __slots__ = ("_decoder", "_parts")

    def __init__(self) -> None:
        self._decoder = _Decoder()
        self._parts: list[str] = []

    def add(self, data: _Bytes, final: bool) -> None:
        """Decode a fragment; ProtocolError 1007 as soon as the bytes so far cannot be UTF-8."""
        self._parts.append(_decode(self._decoder, data, final))

    def text(self) -> str:
        return "".join(self._parts)

    def partial(self) -> "PartialFrame":
        """A check of the next fragment's start that carries on from the fragments so far."""
        return PartialFrame(self._decoder.getstate())


class PartialFrame:
    """The payload of one text frame that has not all arrived: ``extend`` with where it is in the
    buffer; only the bytes not checked yet are decoded."""

    __slots__ = ("_decoder", "checked")

    def __init__(self, state: Optional[tuple[bytes, int]] = None) -> None:
        self._decoder = _Decoder()
        if state is not None:
            self._decoder.setstate(state)
        self.checked = 0

    def extend(self, buffer: bytearray, start: int, end: int) -> None:
        """The payload so far is ``buffer[start:end]``; ProtocolError 1007 when those bytes cannot
        begin valid UTF-8."""
        if end - start > self.checked:
            _decode(self._decoder, buffer[start + self.checked : end], False)  # a copy: the buffer may grow
            self.checked = end - start
