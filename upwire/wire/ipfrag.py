"""IP fragment reassembly for captures: the fragments of one datagram in, its whole payload out.

Owns: collecting IPv4 and IPv6 fragments by datagram (addresses, identification), keeping the holes
still to fill (RFC 815) so that each fragment costs little whatever the order, putting the payload
together once none is left, and the bounds on what waits (datagrams pending, fragments per datagram,
how long they wait in capture time).

Must not know: link types or file formats (`capture`), TCP (`tcp`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = ["Reassembler"]

# RFC 791 and RFC 8200: a datagram's payload is at most 65535 bytes (less its header).
_MAX_DATAGRAM = 65535
# Datagrams waiting for fragments at once; the oldest is given up past this.
_MAX_PENDING = 256
# A datagram whose fragments have not all come within this many seconds of capture time is given up
# (RFC 791's reassembly timer suggests 15 s; Linux waits 30 s).
_TIMEOUT_S = 30.0
# Fragments kept for one datagram: real stacks cut at 576 bytes at least (118 pieces for 64 KiB); 8-byte
# pieces of a 16 KiB datagram still fit. Past this the datagram is given up (a capture made to be slow).
_MAX_FRAGMENTS = 2048


@dataclass(slots=True)
class _Datagram:
    first_time: float
    # The bytes received so far, by offset, never overlapping: a fragment adds only what fills holes.
    pieces: dict[int, bytes] = field(default_factory=dict)
    # The holes still to fill, sorted and disjoint: [hole_starts[i], hole_ends[i]).
    hole_starts: list[int] = field(default_factory=lambda: [0])
    hole_ends: list[int] = field(default_factory=lambda: [_MAX_DATAGRAM + 1])
    end: int | None = None  # known once the last fragment (no More Fragments flag) came
    protocol: int | None = None  # what the payload starts with, from the first fragment (offset 0)

    def fill(self, start: int, data: bytes) -> None:
        """Keep the parts of `data` (at `start`) that fill holes; earlier bytes win where they overlap."""
        stop = start + len(data)
        starts, ends = self.hole_starts, self.hole_ends
        first = bisect_right(ends, start)  # the first hole that ends after `start`
        last = first
        while last < len(starts) and starts[last] < stop:
            last += 1
        if first == last:
            return  # nothing new: a copy
        new_starts: list[int] = []
        new_ends: list[int] = []
        for hole_start, hole_end in zip(starts[first:last], ends[first:last], strict=True):
            taken_start, taken_end = max(hole_start, start), min(hole_end, stop)
            self.pieces[taken_start] = data[taken_start - start : taken_end - start]
            if hole_start < taken_start:
                new_starts.append(hole_start)
                new_ends.append(taken_start)
            if taken_end < hole_end:
                new_starts.append(taken_end)
                new_ends.append(hole_end)
        starts[first:last] = new_starts
        ends[first:last] = new_ends

    def close_at(self, end: int) -> None:
        """The datagram ends at `end`: the holes past it are none."""
        self.end = end
        starts, ends = self.hole_starts, self.hole_ends
        cut = bisect_right(starts, end - 1) if end else 0  # holes that start before `end`
        del starts[cut:]
        del ends[cut:]
        if ends and ends[-1] > end:
            ends[-1] = end


class Reassembler:
    """Put IP fragments back together, as Wireshark does before it reads TCP.

    `add` takes each fragment's payload and returns the datagram's whole payload with its last missing
    fragment. Fragments may come in any order and overlap; where they overlap, the bytes that came first
    count. Datagrams given up (too many pending, too large, too many fragments, too old, or never
    completed) are counted in `incomplete`.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[object, ...], _Datagram] = {}
        # Datagrams put together lately, with their fragments (offset, size, hash): a copy of one of
        # them seen again (a capture on several interfaces, say) is not a new datagram.
        self._done: dict[tuple[object, ...], set[tuple[int, int, int]]] = {}
        self._done_fragments: dict[tuple[object, ...], set[tuple[int, int, int]]] = {}
        self.incomplete = 0

    def add(
        self,
        key: tuple[object, ...],
        offset: int,
        more: bool,
        payload: bytes,
        time: float,
        protocol: int,
    ) -> tuple[int, bytes] | None:
        """Add one fragment; return the first fragment's protocol and the whole payload once complete.

        Args:
            key: the datagram: IP version, addresses, identification (and IPv4's protocol).
            offset: where the fragment's payload goes, in bytes.
            more: the More Fragments flag (False on the last fragment).
            payload: the fragment's payload.
            time: the capture time (for the reassembly timeout).
            protocol: what the payload is: IPv4's protocol, or the Next Header of IPv6's Fragment header
                (the first fragment's counts, RFC 8200 §4.5).
        """
        self._expire(time)
        fingerprint = (offset, len(payload), hash(payload))
        done = self._done.get(key)
        if done is not None:
            if fingerprint in done:
                return None  # a copy of a fragment already used
            del self._done[key]  # the identification is used again, for a new datagram
        datagram = self._pending.get(key)
        if datagram is None:
            if len(self._pending) >= _MAX_PENDING:
                del self._pending[next(iter(self._pending))]  # the oldest
                self._done_fragments.pop(key, None)
                self.incomplete += 1
            datagram = self._pending[key] = _Datagram(time)
            self._done_fragments[key] = set()
        fingerprints = self._done_fragments[key]
        end = offset + len(payload)
        if (
            end > _MAX_DATAGRAM
            or (more and len(payload) % 8)
            or (
                datagram.end is not None
                and (end > datagram.end or (not more and end != datagram.end))
            )
            or len(fingerprints) >= _MAX_FRAGMENTS
        ):
            # Past the largest datagram, a fragment that is not the last and not a multiple of 8 bytes,
            # one past the datagram's end or a second, different end, or too many fragments: not what a
            # stack sends. The datagram is given up.
            self._give_up(key)
            return None
        fingerprints.add(fingerprint)
        datagram.fill(offset, payload)
        if not more and datagram.end is None:
            datagram.close_at(end)
        if offset == 0:
            datagram.protocol = protocol
        if datagram.end is None or datagram.hole_starts or datagram.protocol is None:
            return None
        whole = b"".join(datagram.pieces[at] for at in sorted(datagram.pieces))
        del self._pending[key]
        if len(self._done) >= _MAX_PENDING:
            del self._done[next(iter(self._done))]
        self._done[key] = self._done_fragments.pop(key)
        return datagram.protocol, whole

    def finish(self) -> None:
        """The capture ended: what is still pending never completed."""
        self.incomplete += len(self._pending)
        self._pending.clear()
        self._done_fragments.clear()

    def _give_up(self, key: tuple[object, ...]) -> None:
        del self._pending[key]
        self._done_fragments.pop(key, None)
        self.incomplete += 1

    def _expire(self, now: float) -> None:
        while self._pending:
            key = next(iter(self._pending))
            if now - self._pending[key].first_time <= _TIMEOUT_S:
                return
            self._give_up(key)
