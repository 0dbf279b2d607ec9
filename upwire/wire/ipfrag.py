"""IP fragment reassembly for captures: the fragments of one datagram in, its whole payload out.

Owns: collecting IPv4 and IPv6 fragments by datagram (addresses, identification, protocol), putting
their payloads together once every byte from 0 to the last fragment's end has come, in any order, and the
bounds on what waits (datagrams pending, their size, how long they wait in capture time).

Must not know: link types or file formats (`capture`), TCP (`tcp`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Reassembler"]

# RFC 791 and RFC 8200: a datagram's payload is at most 65535 bytes (less its header).
_MAX_DATAGRAM = 65535
# Datagrams waiting for fragments at once; the oldest is given up past this.
_MAX_PENDING = 256
# A datagram whose fragments have not all come within this many seconds of capture time is given up
# (RFC 791's reassembly timer suggests 15 s; Linux waits 30 s).
_TIMEOUT_S = 30.0


@dataclass(slots=True)
class _Datagram:
    first_time: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    end: int | None = None  # known once the last fragment (no More Fragments flag) came


class Reassembler:
    """Put IP fragments back together, as Wireshark does before it reads TCP.

    `add` takes each fragment's payload and returns the datagram's whole payload with its last missing
    fragment. Overlapping fragments are allowed; where they overlap, the one that starts first counts.
    Datagrams given up (too many pending, too large, too old, or never completed) are counted in
    `incomplete`.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[object, ...], _Datagram] = {}
        # Datagrams put together lately, with their fragments (offset, size, hash): a copy of one of
        # them seen again (a capture on several interfaces, say) is not a new datagram.
        self._done: dict[tuple[object, ...], set[tuple[int, int, int]]] = {}
        self.incomplete = 0

    def add(
        self, key: tuple[object, ...], offset: int, more: bool, payload: bytes, time: float
    ) -> bytes | None:
        """Add one fragment (`offset` in bytes, `more`: the More Fragments flag); return the whole payload
        once the datagram is complete, else None."""
        self._expire(time)
        done = self._done.get(key)
        if done is not None:
            if (offset, len(payload), hash(payload)) in done:
                return None  # a copy of a fragment already used
            del self._done[key]  # the identification is used again, for a new datagram
        datagram = self._pending.get(key)
        if datagram is None:
            if len(self._pending) >= _MAX_PENDING:
                del self._pending[next(iter(self._pending))]  # the oldest
                self.incomplete += 1
            datagram = self._pending[key] = _Datagram(time)
        if offset + len(payload) > _MAX_DATAGRAM or (more and len(payload) % 8):
            # Past the largest datagram, or a fragment that is not the last and not a multiple of 8
            # bytes: not a fragment any stack would send. The datagram is given up.
            del self._pending[key]
            self.incomplete += 1
            return None
        if not more:
            datagram.end = offset + len(payload)
        if offset not in datagram.pieces or len(payload) > len(datagram.pieces[offset]):
            datagram.pieces[offset] = payload
        if datagram.end is None:
            return None
        whole = self._join(datagram.pieces, datagram.end)
        if whole is not None:
            del self._pending[key]
            if len(self._done) >= _MAX_PENDING:
                del self._done[next(iter(self._done))]
            self._done[key] = {
                (at, len(piece), hash(piece)) for at, piece in datagram.pieces.items()
            }
        return whole

    def finish(self) -> None:
        """The capture ended: what is still pending never completed."""
        self.incomplete += len(self._pending)
        self._pending.clear()

    @staticmethod
    def _join(pieces: dict[int, bytes], end: int) -> bytes | None:
        """The bytes 0..end if the pieces cover them all (where they overlap, the one that starts first)."""
        out = bytearray()
        for offset in sorted(pieces):
            if offset > len(out):
                return None  # a hole
            piece = pieces[offset]
            out += piece[len(out) - offset :]
            if len(out) >= end:
                return bytes(out[:end])
        return None

    def _expire(self, now: float) -> None:
        while self._pending:
            key = next(iter(self._pending))
            if now - self._pending[key].first_time <= _TIMEOUT_S:
                return
            del self._pending[key]
            self.incomplete += 1
