"""Receiving a large frame in place: `receive_buffer` / `receive_written` next to `receive_data`.

An I/O layer may read the rest of a large frame straight into the core's buffer (asyncio's BufferedProtocol).
Whatever mix of the two ways the bytes arrive by, the events must be exactly those of `receive_data` alone,
and a header that announces a large frame must not by itself make the core allocate that much.
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import upwire.protocol.connection as core
from upwire.exceptions import UsageError
from upwire.protocol import CloseReceived, Connection, Ping, ProtocolFailure, Role, State
from upwire.protocol.events import Event
from upwire.protocol.frames import (
    Opcode,
    encode_frame,
    keep_payload,
    keep_payload_py,
    payload_buffer,
    payload_buffer_py,
)

from .wire import KEY, sent_close

MiB = 1 << 20


@pytest.fixture
def small_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every path with small data: frames of 40 bytes or more received in place, growing by 16 bytes; and
    while streaming (batches of 64 bytes or more), frames of 20 bytes or more, with 50 bytes of read-ahead."""
    monkeypatch.setattr(core, "_SINK_MIN_FRAME", 40)
    monkeypatch.setattr(core, "_SINK_STEP", 16)
    monkeypatch.setattr(core, "_STREAM_BATCH", 64)
    monkeypatch.setattr(core, "_STREAM_MIN_FRAME", 20)
    monkeypatch.setattr(core, "_READ_AHEAD", 50)
    yield


def frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=KEY)


def feed_mixed(
    conn: Connection, stream: bytes, choices: list[tuple[bool, int, int]]
) -> list[Event]:
    """Deliver `stream` in chunks; when the core offers its buffer and the choice says so, write into it.

    It also checks that the core offers a view only while `frame_incomplete` says so.

    A choice's third item picks the I/O layer's hints: 0 none; 1 `waiting` (the true number of bytes left
    after the chunk); 2 `waiting=0` and `frames_ahead=0`; 3 `waiting` and `frames_ahead=0`.
    """
    events: list[Event] = []
    pos = 0
    step = 0
    while pos < len(stream):
        in_place, size, hints = choices[step % len(choices)] if choices else (True, 1 << 30, 0)
        step += 1
        incomplete = conn.frame_incomplete
        view = conn.receive_buffer(0 if hints >= 2 else None) if in_place else None
        # The I/O layer skips `receive_buffer` unless `frame_incomplete`: no view may be lost that way.
        assert view is None or incomplete
        if view is not None:
            n = min(max(1, size), len(view), len(stream) - pos)
            view[:n] = stream[pos : pos + n]
            events += conn.receive_written(n)
        else:
            n = max(1, size)
            left = max(len(stream) - pos - n, 0)
            events += conn.receive_data(stream[pos : pos + n], (None, left, 0, left)[hints])
        pos += n
    return events


messages = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=100),
        st.tuples(st.binary(max_size=120), st.binary(max_size=120)),  # two fragments
        st.binary(max_size=125).map(lambda b: Ping(b)),
    ),
    max_size=8,
)


def build(items: list[object]) -> tuple[bytes, list[Event]]:
    stream = b""
    expected: list[Event] = []
    for item in items:
        if isinstance(item, Ping):
            stream += frame(Opcode.PING, item.data)
            expected.append(item)
        elif isinstance(item, tuple):
            stream += frame(Opcode.BINARY, item[0], fin=False) + frame(Opcode.CONTINUATION, item[1])
            expected.append(item[0] + item[1])
        elif isinstance(item, str):
            stream += frame(Opcode.TEXT, item.encode())
            expected.append(item)
        else:
            assert isinstance(item, bytes)
            stream += frame(Opcode.BINARY, item)
            expected.append(item)
    return stream, expected


# The fixture only patches two constants, the same for every example.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=messages,
    choices=st.lists(st.tuples(st.booleans(), st.integers(1, 300), st.integers(0, 3)), max_size=12),
)
def test_any_mix_of_in_place_and_ordinary_reads_gives_the_same_events(
    small_sink: None, items: list[object], choices: list[tuple[bool, int, int]]
) -> None:
    stream, expected = build(items)
    assert Connection(Role.SERVER).receive_data(stream) == expected
    assert feed_mixed(Connection(Role.SERVER), stream, choices) == expected


@pytest.mark.parametrize("hints", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [64, 100, 173, 300])
def test_a_stream_of_whole_binary_messages_gives_the_same_events_under_every_hint(
    small_sink: None, hints: int, size: int
) -> None:
    # Streamed whole binary messages, read ahead or each into its own bytes depending on the hints: the
    # events never depend on them (random streams rarely hit these paths, so they are spelled out).
    items: list[object] = [bytes([i]) * (90 + 37 * i) for i in range(6)] + ["end"]
    stream, expected = build(items)
    for choices in (
        [(True, size, hints)],
        [(False, size, hints)],
        [(True, size, hints), (False, 70, 1)],
    ):
        assert feed_mixed(Connection(Role.SERVER), stream, choices) == expected


def test_a_large_frame_is_received_in_place_and_delivered_whole() -> None:
    payload = bytes(range(256)) * (3 * MiB // 256)
    stream = frame(Opcode.BINARY, payload) + frame(Opcode.TEXT, b"after")
    conn = Connection(Role.SERVER, max_message_size=4 * MiB)
    assert conn.receive_data(stream[:1000]) == []
    offered = 0
    pos = 1000
    events: list[Event] = []
    while (view := conn.receive_buffer()) is not None:
        n = min(len(view), 100_000)
        offered += 1
        view[:n] = stream[pos : pos + n]
        pos += n
        events += conn.receive_written(n)
    assert offered > 1
    assert events == [payload]
    assert pos == len(payload) + 14  # the view never reaches past the frame
    assert conn.receive_data(stream[pos:]) == ["after"]


@pytest.fixture
def no_spare() -> Iterator[None]:
    """Start without the thread's spare frame buffer (which an earlier large frame may have left)."""
    core._spare.buffer = None
    yield


def receive_in_place(conn: Connection, data: bytes, step: int = 100_000) -> tuple[int, list[Event]]:
    """Write `data` into the views the core offers until it offers none; return the bytes taken, events."""
    pos = 0
    events: list[Event] = []
    while pos < len(data) and (view := conn.receive_buffer()) is not None:
        n = min(len(view), step, len(data) - pos)
        view[:n] = data[pos : pos + n]
        pos += n
        events += conn.receive_written(n)
    return pos, events


def test_a_large_frame_buffer_is_reused_and_never_read_past_its_frame(no_spare: None) -> None:
    # Fragments (unlike whole binary messages, below) are received into the growing frame buffer.
    big = frame(Opcode.BINARY, b"a" * (3 * MiB), fin=False)
    end = frame(Opcode.CONTINUATION, b"")
    conn = Connection(Role.SERVER, max_message_size=4 * MiB)
    assert conn.receive_data(big[:300_000]) == []
    taken, events = receive_in_place(conn, big[300_000:])
    assert taken == len(big) - 300_000 and events == []
    assert conn.receive_data(end) == [b"a" * (3 * MiB)]
    spare = core._spare.buffer
    assert spare is not None and len(spare) >= len(big)
    # The next large frame gets that buffer, 3 MiB long, yet the views stop at the frame's end.
    small = frame(Opcode.BINARY, b"b" * 300_000, fin=False)
    after = frame(Opcode.TEXT, b"next")
    assert conn.receive_data(small[:1000]) == []
    taken, events = receive_in_place(conn, small[1000:] + after, step=1 << 30)
    assert taken == len(small) - 1000
    assert events == []
    assert conn.receive_data(end + after) == [b"b" * 300_000, "next"]
    assert core._spare.buffer is spare


def address(buffer: memoryview | bytes) -> int:
    """Where the bytes of a writable view, or of a bytes object, are in memory."""
    if isinstance(buffer, bytes):
        value = ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value
        assert value is not None
        return value
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_a_large_whole_binary_message_is_received_into_the_bytes_delivered(role: Role) -> None:
    payload = random.Random(7).randbytes(MiB + 3)
    key = KEY if role is Role.SERVER else None  # a server's peer, a client, masks what it sends
    stream = encode_frame(Opcode.BINARY, payload, mask_key=key)
    stream += encode_frame(Opcode.TEXT, b"after", mask_key=key)
    frame_end = len(stream) - len(encode_frame(Opcode.TEXT, b"after", mask_key=key))
    header = frame_end - len(payload)
    conn = Connection(role, max_message_size=4 * MiB)
    # An odd split: each piece is unmasked where it lies, from its own place in the key.
    assert conn.receive_data(stream[:100_001]) == []
    pos = 100_001
    events: list[Event] = []
    last = (0, 0)
    while (view := conn.receive_buffer()) is not None:
        assert pos + len(view) == frame_end  # never past the frame
        n = min(len(view), 300_007)
        view[:n] = stream[pos : pos + n]
        last = (address(view), pos - header)
        pos += n
        events += conn.receive_written(n)
    assert events == [payload]
    message = events[0]
    assert type(message) is bytes
    # With the C speedups the views were the message's own bytes: nothing copied it after the reads.
    zero_copy = last[0] == address(message) + last[1]
    assert zero_copy is (payload_buffer is not payload_buffer_py)
    assert conn.receive_data(stream[pos:]) == ["after"]


def test_receive_data_fills_a_whole_binary_message_and_goes_on_after_it() -> None:
    payload = random.Random(8).randbytes(400_001)
    stream = frame(Opcode.BINARY, payload) + frame(Opcode.TEXT, b"next") + frame(Opcode.PING, b"p")
    conn = Connection(Role.SERVER)
    assert conn.receive_data(stream[:262_145]) == []
    assert conn.receive_buffer() is not None  # offered, then not used
    assert conn.receive_data(stream[262_145:300_000]) == []
    assert conn.receive_data(stream[300_000:]) == [payload, "next", Ping(b"p")]
    assert conn.receive_buffer() is None


def receive_whole(conn: Connection, payload: bytes) -> bytes:
    """Receive one binary message of 256 KiB or more as an I/O layer does: a first read, then in place."""
    stream = frame(Opcode.BINARY, payload)
    assert conn.receive_data(stream[:65_536]) == []
    taken, events = receive_in_place(conn, stream[65_536:])
    assert taken == len(stream) - 65_536 and len(events) == 1
    message = events[0]
    assert isinstance(message, bytes)
    return message


def test_a_message_the_application_keeps_is_never_written_into_again() -> None:
    payloads = [random.Random(i).randbytes(300_000) for i in range(4)]
    conn = Connection(Role.SERVER)
    kept = [receive_whole(conn, payload) for payload in payloads]
    assert kept == payloads
    hashes = [hash(message) for message in kept]
    kept.append(receive_whole(conn, payloads[0][::-1]))
    assert kept[:4] == payloads and [hash(message) for message in kept[:4]] == hashes


def test_a_message_the_application_dropped_is_received_into_again() -> None:
    # A size of its own: no message kept from another test can be the one reused.
    size = 300_123
    conn = Connection(Role.SERVER)
    first = receive_whole(conn, bytes(size))
    where = address(first)
    hash(first)  # cached in the object: the next message must not inherit it
    del first
    # Were its memory freed, this would most likely take it.
    blocker = random.Random(10).randbytes(size)
    payload = random.Random(9).randbytes(size)
    second = receive_whole(conn, payload)
    assert second == payload and hash(second) == hash(bytes(memoryview(payload)))
    if keep_payload is not keep_payload_py:
        # The C speedups received it into the dropped message's memory: no new allocation.
        assert address(second) == where and address(blocker) != where
    # A message of another size gets memory of its own.
    other = receive_whole(conn, payload[:-1])
    assert other == payload[:-1] and second == payload


def test_messages_dropped_in_another_order_than_they_came_are_received_into_again() -> None:
    # Several connections' messages are handed out and dropped in any order: the last four are kept.
    size = 300_321
    conn = Connection(Role.SERVER)
    held = [receive_whole(conn, random.Random(i).randbytes(size)) for i in range(4)]
    where = {address(message) for message in held}
    assert len(where) == 4
    held.clear()
    blockers = [random.Random(10 + i).randbytes(size) for i in range(4)]
    payloads = [random.Random(20 + i).randbytes(size) for i in range(4)]
    again = [receive_whole(conn, payload) for payload in payloads]
    assert again == payloads
    if keep_payload is not keep_payload_py:
        assert {address(message) for message in again} == where
        assert not where & {address(blocker) for blocker in blockers}


def test_a_large_message_parsed_from_one_read_is_reused_alike_once_dropped() -> None:
    # Whole in one read (reading ahead, or a read that took all of it), a 256 KiB+ binary message is copied
    # out of the read by the frame parser; it too is kept, and reused only once nothing else refers to it.
    size = 300_231
    conn = Connection(Role.SERVER)
    payloads = [random.Random(30 + i).randbytes(size) for i in range(3)]
    first = conn.receive_data(frame(Opcode.BINARY, payloads[0]))
    assert first == payloads[:1]
    where = address(first[0])
    kept = conn.receive_data(frame(Opcode.BINARY, payloads[1]))[0]
    kept_hash = hash(kept)
    hash(first[0])
    del first
    blocker = random.Random(40).randbytes(size)
    again = conn.receive_data(frame(Opcode.BINARY, payloads[2]))[0]
    assert again == payloads[2] and hash(again) == hash(bytes(memoryview(payloads[2])))
    assert kept == payloads[1] and hash(kept) == kept_hash
    if keep_payload is not keep_payload_py:
        assert address(again) == where and address(blocker) != where


def test_a_spare_buffer_is_kept_only_up_to_16_mib(no_spare: None) -> None:
    huge = frame(Opcode.BINARY, bytes(17 * MiB))
    conn = Connection(Role.SERVER, max_message_size=32 * MiB)
    assert conn.receive_data(huge[:300_000]) == []
    taken, events = receive_in_place(conn, huge[300_000:], step=4 * MiB)
    assert taken == len(huge) - 300_000
    assert events == [bytes(17 * MiB)]
    assert core._spare.buffer is None


def test_a_header_announcing_a_large_frame_does_not_allocate_its_size(no_spare: None) -> None:
    conn = Connection(Role.SERVER, max_message_size=64 * MiB)
    header_and_some = frame(Opcode.BINARY, bytes(64 * MiB - 1))[:5000]
    assert conn.receive_data(header_and_some) == []
    view = conn.receive_buffer()
    assert view is not None
    # At most 4 times what arrived, or 256 KiB more: never the 64 MiB announced.
    assert len(header_and_some) + len(view) <= max(4 * 5000, 5000 + 256 * 1024)
    # Filling it lets the buffer grow by the same rule, not to the announced size at once.
    view[:] = bytes(len(view))
    total = 5000 + len(view)
    assert conn.receive_written(len(view)) == []
    view = conn.receive_buffer()
    assert view is not None
    assert total + len(view) <= max(4 * total, total + 256 * 1024)


def test_a_streamed_text_frame_is_not_received_in_place() -> None:
    # Text is validated as it arrives (fail fast on invalid UTF-8): it never waits in a buffer.
    conn = Connection(Role.SERVER, max_message_size=4 * MiB)
    assert conn.receive_data(frame(Opcode.TEXT, b"a" * MiB)[:300_000]) == []
    assert conn.receive_buffer() is None


def test_an_oversized_frame_is_refused_before_any_buffer_is_offered() -> None:
    conn = Connection(Role.SERVER, max_message_size=MiB)
    events = conn.receive_data(frame(Opcode.BINARY, bytes(MiB + 1))[:300_000])
    assert isinstance(events[-1], ProtocolFailure) and events[-1].code == 1009
    assert sent_close(conn)[0] == 1009
    assert conn.receive_buffer() is None


def test_receive_data_after_an_unused_offer_goes_on_from_the_same_bytes() -> None:
    payload = b"x" * 400_000
    stream = frame(Opcode.BINARY, payload)
    conn = Connection(Role.SERVER)
    assert conn.receive_data(stream[:300_000]) == []
    view = conn.receive_buffer()
    assert view is not None
    view[:10] = stream[300_000:300_010]
    assert conn.receive_written(10) == []
    assert conn.receive_buffer() is not None  # offered, then not used
    assert conn.receive_data(stream[300_010:]) == [payload]


def test_receive_written_needs_an_offered_view_and_at_most_its_size() -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(UsageError):
        conn.receive_written(1)
    assert conn.receive_data(frame(Opcode.BINARY, bytes(300_000))[:270_000]) == []
    view = conn.receive_buffer()
    assert view is not None
    with pytest.raises(UsageError):
        conn.receive_written(len(view) + 1)


def test_end_of_stream_in_the_middle_of_an_in_place_frame_closes_with_1006() -> None:
    conn = Connection(Role.SERVER)
    assert conn.receive_data(frame(Opcode.BINARY, bytes(300_000))[:270_000]) == []
    assert conn.receive_buffer() is not None
    assert conn.receive_eof() == []
    assert conn.state is State.CLOSED
    assert conn.close_code == 1006
    assert conn.receive_buffer() is None


def test_a_close_frame_after_an_in_place_frame_is_answered(small_sink: None) -> None:
    stream = frame(Opcode.BINARY, b"y" * 100) + frame(Opcode.CLOSE, b"\x03\xe8")
    conn = Connection(Role.SERVER)
    events = conn.receive_data(stream[:20])
    view = conn.receive_buffer()
    assert view is not None
    n = len(view)
    view[:] = stream[20 : 20 + n]
    events += conn.receive_written(n)
    while (view := conn.receive_buffer()) is not None:
        pos = 20 + n
        n2 = len(view)
        view[:] = stream[pos : pos + n2]
        n += n2
        events += conn.receive_written(n2)
    events += conn.receive_data(stream[20 + n :])
    if conn.input_pending:
        events += conn.receive_data(b"")
    assert events == [b"y" * 100, CloseReceived(1000, "")]
    assert sent_close(conn)[0] == 1000


KiB = 1 << 10


def stream_of(count: int, size: int) -> tuple[bytes, list[Event]]:
    payloads = [bytes([i]) * size for i in range(count)]
    return b"".join(frame(Opcode.BINARY, p) for p in payloads), list(payloads)


def read_streaming(conn: Connection, data: bytes) -> tuple[list[int], list[Event]]:
    """Like a pipelining peer's server: one full 256 KiB read, then full views until the core offers none.

    Returns how many events each in-place read completed, and all events.
    """
    first = 256 * KiB
    events = conn.receive_data(data[:first])
    pos = first
    per_read: list[int] = []
    while pos < len(data) and (view := conn.receive_buffer()) is not None:
        n = min(len(view), len(data) - pos)
        view[:n] = data[pos : pos + n]
        pos += n
        completed = conn.receive_written(n)
        per_read.append(len(completed))
        events += completed
    if pos < len(data):
        events += conn.receive_data(data[pos:])
    return per_read, events


def test_while_the_peer_streams_one_read_takes_the_frames_after_a_large_one(no_spare: None) -> None:
    data, expected = stream_of(40, 64 * KiB)
    conn = Connection(Role.SERVER, max_message_size=None)
    per_read, events = read_streaming(conn, data)
    assert events == expected
    # 64 KiB frames, 512 KiB of read-ahead: reads complete 7 or 8 frames each, not one.
    assert min(per_read[:-1]) >= 7
    assert len(per_read) <= 6


def test_the_read_ahead_view_stops_512_kib_past_the_frame_and_the_buffer_is_reused(
    no_spare: None,
) -> None:
    data, expected = stream_of(40, 64 * KiB)
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(data[: 256 * KiB]) == expected[:3]
    view = conn.receive_buffer()
    assert view is not None
    frame_end = 4 * len(frame(Opcode.BINARY, bytes(64 * KiB)))
    assert 256 * KiB + len(view) == frame_end + 512 * KiB
    buffer = view.obj
    n = len(view)
    view[:] = data[256 * KiB : 256 * KiB + n]
    # The frame that was arriving, and the 7 whole frames of the 512 KiB after it.
    assert conn.receive_written(n) == expected[3:11]
    # The frame still arriving moved to the start of the same buffer, and the next view follows it.
    view = conn.receive_buffer()
    assert view is not None and view.obj is buffer


def test_a_read_that_ends_between_frames_gives_the_buffer_back(no_spare: None) -> None:
    data, expected = stream_of(8, 64 * KiB)
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(data[: 256 * KiB]) == expected[:3]
    view = conn.receive_buffer()
    assert view is not None and len(view) > len(data) - 256 * KiB
    rest = len(data) - 256 * KiB
    view[:rest] = data[256 * KiB :]
    assert conn.receive_written(rest) == expected[3:]
    assert conn.receive_buffer() is None
    assert core._spare.buffer is not None  # kept for the thread's next large frame
    # Small frames go on through receive_data as usual.
    assert conn.receive_data(frame(Opcode.TEXT, b"hi")) == ["hi"]


def test_a_small_batch_keeps_the_old_rule_frames_under_256_kib_are_copied() -> None:
    one = frame(Opcode.BINARY, bytes(64 * KiB))
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(one[:1000]) == []
    assert (
        conn.receive_buffer() is None
    )  # not streaming: a 64 KiB frame waits in the ordinary buffer
    assert conn.receive_data(one[1000:]) == [bytes(64 * KiB)]


def test_messages_before_a_close_frame_in_the_read_ahead_are_answered_first() -> None:
    data, expected = stream_of(6, 64 * KiB)
    data += frame(Opcode.CLOSE, b"\x03\xe8bye") + frame(Opcode.TEXT, b"after the close")
    conn = Connection(Role.SERVER, max_message_size=None)
    per_read, events = read_streaming(conn, data)
    assert per_read == [3]  # one read took the last three messages and what follows them
    assert events == expected
    assert conn.input_pending
    assert conn.receive_data(b"") == [CloseReceived(1000, "bye")]
    assert sent_close(conn)[0] == 1000


def test_a_protocol_error_in_the_read_ahead_fails_after_the_messages_before_it() -> None:
    data, expected = stream_of(6, 64 * KiB)
    data += b"\x83\x80" + KEY  # reserved opcode 3
    data += frame(Opcode.TEXT, b"never delivered")
    conn = Connection(Role.SERVER, max_message_size=None)
    per_read, events = read_streaming(conn, data)
    assert per_read == [3]  # one read took the last three messages and what follows them
    assert events == expected
    assert conn.input_pending
    failure = conn.receive_data(b"")
    assert len(failure) == 1 and isinstance(failure[0], ProtocolFailure) and failure[0].code == 1002
    assert sent_close(conn)[0] == 1002
    assert conn.receive_buffer() is None


def test_while_streaming_a_header_announcing_a_huge_frame_does_not_allocate_its_size(
    no_spare: None,
) -> None:
    data, expected = stream_of(3, 64 * KiB)
    huge = frame(Opcode.BINARY, bytes(64 * MiB - 1))
    batch = data + huge[: 256 * KiB - len(data)]
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(batch) == expected
    view = conn.receive_buffer()
    assert view is not None
    fill = 256 * KiB - len(data)
    assert fill + len(view) <= max(4 * fill, fill + 256 * KiB)


@pytest.mark.parametrize("frames_ahead", [-1, 0, 2, 100])
def test_frames_ahead_caps_the_read_ahead(no_spare: None, frames_ahead: int) -> None:
    data, expected = stream_of(20, 64 * KiB)
    size = len(frame(Opcode.BINARY, bytes(64 * KiB)))
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(data[: 256 * KiB]) == expected[:3]
    view = conn.receive_buffer(frames_ahead)
    assert view is not None
    ahead = min(512 * KiB, max(frames_ahead, 0) * size)
    assert 256 * KiB + len(view) == 4 * size + ahead
    n = len(view)
    view[:] = data[256 * KiB : 256 * KiB + n]
    assert conn.receive_written(n) == expected[3 : 4 + ahead // size]


def first_read_of_a_stream(
    count: int, size: int = 320 * KiB
) -> tuple[bytes, list[Event], int, Connection]:
    """`count` binary messages of `size` bytes streamed: the stream, its events, one frame's size, and a
    server connection that took a full 256 KiB read and was told the rest is waiting."""
    data, expected = stream_of(count, size)
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(data[: 256 * KiB], len(data) - 256 * KiB) == []
    return data, expected, len(frame(Opcode.BINARY, bytes(size))), conn


def read_as_asyncio_does(data: bytes) -> tuple[int, list[Event]]:
    """Read the whole stream as the asyncio layer reads: into the core's view when it offers one, else
    256 KiB into a shared buffer, saying how much more is waiting. Returns the number of reads and the
    events."""
    conn = Connection(Role.SERVER, max_message_size=None)
    events: list[Event] = []
    pos = reads = 0
    while pos < len(data):
        reads += 1
        view = conn.receive_buffer()
        if view is None:
            n = min(256 * KiB, len(data) - pos)
            events += conn.receive_data(data[pos : pos + n], len(data) - pos - n)
        else:
            n = min(len(view), len(data) - pos)
            view[:n] = data[pos : pos + n]
            events += conn.receive_written(n)
        pos += n
    return reads, events


def test_a_stream_of_whole_binary_messages_is_read_ahead_when_more_than_the_frame_is_waiting(
    no_spare: None,
) -> None:
    # A peer streaming 320 KiB binary messages: its next frames wait behind the one arriving, so one read
    # takes the rest of a frame and the frames after it (512 KiB past its end), not one read per piece.
    data, expected, frame_end, conn = first_read_of_a_stream(8)
    view = conn.receive_buffer()
    assert view is not None
    assert 256 * KiB + len(view) == frame_end + 512 * KiB
    reads, events = read_as_asyncio_does(data)
    assert events == expected
    assert reads <= 6, reads  # 8 frames of 320 KiB: 1 + 4 reads, where one read per piece took 16


def test_a_stream_of_whole_binary_messages_of_512_kib_or_more_is_received_in_place(
    no_spare: None,
) -> None:
    # Streamed 1 MiB messages are not read ahead: each one's rest goes straight into the bytes delivered
    # (the view ends at the frame's end), as when the peer waits between them. Reading ahead saved a read
    # or two per message but cost a second pass over each payload (measured: docs/design.md).
    data, expected, frame_end, conn = first_read_of_a_stream(8, MiB)
    view = conn.receive_buffer()
    assert view is not None
    assert 256 * KiB + len(view) == frame_end
    where = address(view)
    view[:] = data[256 * KiB : frame_end]
    events = conn.receive_written(len(view))
    assert events == expected[:1]
    # With the C speedups the view was the message's own memory, after the part of the first read.
    in_place = where == address(events[0]) + 256 * KiB - (frame_end - MiB)
    assert in_place is (payload_buffer is not payload_buffer_py)
    reads, events = read_as_asyncio_does(data)
    assert events == expected
    assert reads <= 3 * 8, reads  # a 256 KiB read for each frame's start, one or two for its rest


def test_a_whole_binary_message_is_received_in_place_when_only_its_rest_is_waiting(
    no_spare: None,
) -> None:
    # A peer that sent one large message and waits for the answer: its rest is all there is to read, and
    # it goes straight into the bytes delivered (the view ends at the frame's end).
    payload = random.Random(9).randbytes(MiB)
    stream = frame(Opcode.BINARY, payload)
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.receive_data(stream[: 256 * KiB], len(stream) - 256 * KiB) == []
    view = conn.receive_buffer()
    assert view is not None and 256 * KiB + len(view) == len(stream)
    view[:] = stream[256 * KiB :]
    assert conn.receive_written(len(view)) == [payload]
    assert conn.receive_buffer() is None


def test_a_read_ahead_that_stops_short_receives_the_next_whole_binary_message_in_place(
    no_spare: None,
) -> None:
    # The stream paused inside the read-ahead, at the start of a 320 KiB binary message: its rest goes into
    # its own bytes, and the view ends at its end.
    data, expected, size, conn = first_read_of_a_stream(3)
    view = conn.receive_buffer()
    assert view is not None and len(view) > size - 256 * KiB + 1000
    taken = size - 256 * KiB + 1000  # the first frame's rest and 1000 bytes of the next
    view[:taken] = data[256 * KiB : 256 * KiB + taken]
    assert conn.receive_written(taken) == expected[:1]
    view = conn.receive_buffer()
    assert view is not None and len(view) == size - 1000  # the second frame's rest, nothing past it
    view[:] = data[size + 1000 : 2 * size]
    assert conn.receive_written(len(view)) == expected[1:2]
    assert conn.receive_data(data[2 * size :]) == expected[2:]


def test_a_streamed_whole_binary_message_goes_into_its_bytes_when_nothing_may_follow_it(
    no_spare: None,
) -> None:
    # The peer streams, but the I/O layer takes no frame past this one now (`frames_ahead=0`: a Listener
    # whose answers wait to be written, a full recv queue): reading ahead is off, so the message is
    # received into the bytes delivered after all, and the view ends at its end.
    data, expected, size, conn = first_read_of_a_stream(3)
    view = conn.receive_buffer(0)
    assert view is not None and 256 * KiB + len(view) == size
    view[:] = data[256 * KiB : size]
    where = address(view)
    events = conn.receive_written(len(view))
    assert events == expected[:1]
    # With the C speedups the view was the message's own memory, after the part of the first read.
    in_place = where == address(events[0]) + 256 * KiB - (size - 320 * KiB)
    assert in_place is (payload_buffer is not payload_buffer_py)
    assert conn.receive_data(data[size:]) == expected[1:]
