"""Incremental UTF-8 validation for text messages (RFC 6455 §5.6, §8.1).

Owns: deciding as early as possible that a text payload is not UTF-8. Python's incremental decoder fails at
the first impossible byte with one exception: it keeps a pending ED A0..ED BF prefix (the start of a UTF-16
surrogate, never valid in UTF-8) until the next byte arrives. The check of the pending tail closes that gap,
so a fragment that is already invalid fails at once, not at the end of the message.
"""

from __future__ import annotations

import codecs

__all__ = ["IncrementalUTF8Decoder"]

_Decoder = codecs.getincrementaldecoder("utf-8")


class IncrementalUTF8Decoder:
    """Decode UTF-8 in pieces, raising `UnicodeDecodeError` as soon as the bytes seen cannot be UTF-8."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _Decoder("strict")

    def copy(self) -> IncrementalUTF8Decoder:
        """Return an independent decoder in the same state (to check input without consuming it)."""
        twin = IncrementalUTF8Decoder()
        twin._decoder.setstate(self._decoder.getstate())
        return twin

    def decode(self, data: bytes | bytearray | memoryview, final: bool = False) -> str:
        """Decode the next piece; with `final`, the input must end on a character boundary.

        Raises:
            UnicodeDecodeError: when the bytes seen so far are not a prefix of valid UTF-8.
        """
        text: str = self._decoder.decode(data, final)
        if not final:
            pending = self._decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                # The error Python's decoder gives for these bytes when it sees them whole: what a peer
                # reads in the close reason must not depend on where TCP split the message.
                raise UnicodeDecodeError("utf-8", bytes(pending), 0, 1, "invalid continuation byte")
        return text
