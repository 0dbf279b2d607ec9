"""Printed output held per connection on disk until the connection can be printed whole.

Owns: a temporary file that `upwire dissect` writes each frame's printed form to as soon as the frame is
decoded, and the byte ranges of each connection in it. A capture interleaves its connections, but the
output groups them (with notes known only at the end); holding the frames themselves until then kept every
payload and every inflated message in memory at once.

Must not know: what the text says.
"""

from __future__ import annotations

import codecs
import tempfile
from typing import TextIO

__all__ = ["Spool"]

_COPY_BYTES = 1 << 20


class Spool:
    """Text written per key in any order, copied out per key in the order it was written.

    Memory holds a few numbers per run of consecutive writes to one key.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `close`
        self._end = 0
        self._read = False  # the file position has moved away from its end
        self._ranges: dict[int, list[list[int]]] = {}

    def write(self, key: int, text: str) -> None:
        """Append `text` to what `key` holds."""
        data = text.encode()
        if not data:
            return
        if self._read:
            self._file.seek(self._end)
            self._read = False
        self._file.write(data)
        ranges = self._ranges.setdefault(key, [])
        if ranges and ranges[-1][1] == self._end:
            ranges[-1][1] += len(data)
        else:
            ranges.append([self._end, self._end + len(data)])
        self._end += len(data)

    def copy(self, key: int, out: TextIO) -> None:
        """Write what `key` holds to `out`, and forget it."""
        self._file.flush()
        self._read = True
        for start, end in self._ranges.pop(key, []):
            self._file.seek(start)
            # A range may be read in pieces that split a character.
            decoder = codecs.getincrementaldecoder("utf-8")()
            while start < end:
                piece = self._file.read(min(_COPY_BYTES, end - start))
                start += len(piece)
                out.write(decoder.decode(piece, final=start >= end))

    def close(self) -> None:
        """Delete the file."""
        self._file.close()
