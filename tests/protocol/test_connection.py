"""Byte-level tests of `upwire.protocol.connection`: every rule a sequence of frames must follow.

Frames are written as literal bytes. What a connection answers is read back from `data_to_send()`, so "closes
with 1002" means a close frame carrying 1002 is on the wire, not just that an event was returned.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from views import odd_views

from upwire.exceptions import UsageError
from upwire.protocol import (
    CloseReceived,
    Connection,
    Ping,
    Pong,
    ProtocolFailure,
    Role,
    State,
)
from upwire.protocol.events import Event
from upwire.protocol.frames import Opcode, encode_frame

from .wire import KEY, masked, read_frames, sent_close, sent_frames, split_at, xor

FAST = settings(max_examples=200, deadline=None)

MiB = 1 << 20

# RFC 6455 §5.7 examples.
HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")

INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 4999]


def server(**kwargs: int | None) -> Connection:
    return Connection(Role.SERVER, **kwargs)  # type: ignore[arg-type]


def client(**kwargs: int | None) -> Connection:
    return Connection(Role.CLIENT, **kwargs)  # type: ignore[arg-type]


def assert_failed(connection: Connection, events: list[Event], code: int) -> None:
    """The last event is a failure with `code`, a close frame with `code` is queued, TCP should close."""
    assert events, "expected a ProtocolFailure event"
    failure = events[-1]
    assert isinstance(failure, ProtocolFailure), events
    assert failure.code == code, failure
    assert sent_close(connection)[0] == code
    assert connection.close_code == code
    assert connection.failure is not None
    assert connection.failure.close_code == code
    assert connection.transport_should_close
    assert connection.state is not State.OPEN


def fails_with(connection: Connection, data: bytes, code: int) -> list[Event]:
    events = connection.receive_data(data)
    assert_failed(connection, events, code)
    return events


def feed_bytewise(connection: Connection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += connection.receive_data(data[i : i + 1])
    return events


# ---------------------------------------------------------------- receiving valid frames


def test_server_receives_the_rfc_masked_hello() -> None:
    conn = server()
    assert conn.receive_data(HELLO_MASKED) == ["Hello"]
    assert conn.data_to_send() == []
    assert conn.state is State.OPEN
    assert conn.close_code is None


def test_client_receives_the_rfc_unmasked_hello() -> None:
    assert client().receive_data(HELLO_UNMASKED) == ["Hello"]


def test_client_reassembles_the_rfc_fragmented_hello() -> None:
    conn = client()
    assert conn.receive_data(bytes.fromhex("010348656c")) == []
    assert conn.receive_data(bytes.fromhex("80026c6f")) == ["Hello"]


def test_client_receives_the_rfc_256_byte_and_64_kib_binary_messages() -> None:
    conn = client()
    small = bytes(range(256))
    big = bytes(range(256)) * 256
    assert conn.receive_data(bytes.fromhex("827e0100") + small) == [small]
    assert conn.receive_data(bytes.fromhex("827f0000000000010000") + big) == [big]


def test_server_receives_empty_text_and_binary_messages() -> None:
    conn = server()
    assert conn.receive_data(b"\x81\x80" + KEY + b"\x82\x80" + KEY) == ["", b""]


def test_data_after_a_complete_frame_waits_for_the_next_call() -> None:
    conn = server()
    assert conn.receive_data(HELLO_MASKED + HELLO_MASKED[:3]) == ["Hello"]
    assert conn.receive_data(HELLO_MASKED[3:]) == ["Hello"]


# A stream that exercises 7-, 16- and 64-bit lengths, fragments, a multi-byte character split across
# fragments, and control frames between fragments.
CLIENT_STREAM = (
    HELLO_MASKED
    + masked(b"\x82\xfe\x01\x00", bytes(range(256)))
    + masked(b"\x01\x83", "κ".encode() + b"\xe2")  # "κ" then the first byte of "€"
    + masked(b"\x89\x82", b"hi")
    + masked(b"\x80\x82", b"\x82\xac")
    + masked(b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00", b"\x07" * 65536)
    + masked(b"\x8a\x80", b"")
    + masked(b"\x88\x82", b"\x03\xe8")
)
CLIENT_STREAM_EVENTS: list[Event] = [
    "Hello",
    bytes(range(256)),
    Ping(b"hi"),
    "κ€",
    b"\x07" * 65536,
    Pong(b""),
    CloseReceived(1000, ""),
]


def test_server_parses_a_mixed_stream_fed_at_once() -> None:
    conn = server()
    # The close frame waits behind the messages of the same batch, so they can be answered first.
    assert conn.receive_data(CLIENT_STREAM) == CLIENT_STREAM_EVENTS[:-1]
    assert conn.input_pending
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0xA, b"hi")]
    assert conn.receive_data(b"") == CLIENT_STREAM_EVENTS[-1:]
    assert not conn.input_pending
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0x8, b"\x03\xe8")]


def test_a_close_after_messages_in_one_batch_waits_for_receive_data_with_no_bytes() -> None:
    conn = server()
    close = masked(b"\x88\x82", b"\x03\xe8")
    assert conn.receive_data(HELLO_MASKED + close) == ["Hello"]
    assert conn.input_pending
    assert conn.data_to_send() == []
    # Bytes arriving meanwhile are kept, not parsed, until the caller resumes.
    assert conn.receive_data(HELLO_MASKED) == []
    assert conn.receive_data(b"") == [CloseReceived(1000, "")]
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0x8, b"\x03\xe8")]


def test_server_gives_identical_events_when_fed_one_byte_at_a_time() -> None:
    conn = server()
    assert feed_bytewise(conn, CLIENT_STREAM) == CLIENT_STREAM_EVENTS
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0xA, b"hi"), (0x8, b"\x03\xe8")]


def test_server_gives_identical_events_for_every_split_into_two_chunks() -> None:
    stream = CLIENT_STREAM[:600]  # up to the 64-bit frame: every split point of the small frames
    reference = server().receive_data(stream)
    for cut in range(len(stream) + 1):
        conn = server()
        assert conn.receive_data(stream[:cut]) + conn.receive_data(stream[cut:]) == reference, cut


def test_client_gives_identical_events_when_fed_one_byte_at_a_time() -> None:
    stream = (
        HELLO_UNMASKED
        + b"\x82\x7e\x01\x00"
        + bytes(256)
        + b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
        + bytes(65536)
        + b"\x01\x03Hel\x89\x00\x80\x02lo"
    )
    expected: list[Event] = ["Hello", bytes(256), bytes(65536), Ping(b""), "Hello"]
    assert client().receive_data(stream) == expected
    assert feed_bytewise(client(), stream) == expected


# ---------------------------------------------------------------- frame header rules


def test_unmasked_client_frame_closes_with_1002() -> None:
    fails_with(server(), HELLO_UNMASKED, 1002)


def test_masked_server_frame_closes_with_1002() -> None:
    fails_with(client(), HELLO_MASKED, 1002)


def test_64_bit_length_with_top_bit_set_closes_with_1002() -> None:
    fails_with(server(), b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05" + KEY, 1002)


def test_64_bit_length_with_top_bit_set_closes_with_1002_even_without_a_size_limit() -> None:
    conn = server(max_message_size=None, max_frame_size=None)
    fails_with(conn, b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05" + KEY, 1002)


@pytest.mark.parametrize(
    "header",
    [
        b"\x82\xfe\x00\x05",  # 5 in 16 bits
        b"\x82\xfe\x00\x7d",  # 125 in 16 bits
        b"\x82\xff\x00\x00\x00\x00\x00\x00\x00\x05",  # 5 in 64 bits
        b"\x82\xff\x00\x00\x00\x00\x00\x00\xff\xff",  # 65535 in 64 bits
    ],
)
def test_non_minimal_length_encoding_closes_with_1002(header: bytes) -> None:
    fails_with(server(), header + KEY, 1002)


def _whole_frame(size: int, length_bytes: int, mask: bool) -> bytes:
    """A complete binary frame of `size` zero bytes whose length takes `length_bytes` (0, 2 or 8)."""
    code = {0: size, 2: 126, 8: 127}[length_bytes]
    length = size.to_bytes(length_bytes, "big") if length_bytes else b""
    header = bytes([0x82, code | (0x80 if mask else 0)]) + length
    return masked(header, bytes(size)) if mask else header + bytes(size)


@pytest.mark.parametrize(("size", "length_bytes"), [(125, 2), (0, 2), (65535, 8), (125, 8)])
@pytest.mark.parametrize("role", ["server", "client"])
def test_a_whole_frame_with_a_non_minimal_length_closes_with_1002(
    size: int, length_bytes: int, role: str
) -> None:
    # The whole frame in one read takes the parser's fast path (C or Python twin), not the header check.
    conn = server(max_message_size=None) if role == "server" else client(max_message_size=None)
    fails_with(conn, _whole_frame(size, length_bytes, role == "server"), 1002)


@pytest.mark.parametrize(("size", "length_bytes"), [(125, 0), (126, 2), (65535, 2), (65536, 8)])
@pytest.mark.parametrize("role", ["server", "client"])
def test_a_whole_frame_with_the_shortest_length_at_each_boundary_is_a_message(
    size: int, length_bytes: int, role: str
) -> None:
    conn = server(max_message_size=None) if role == "server" else client(max_message_size=None)
    assert conn.receive_data(_whole_frame(size, length_bytes, role == "server")) == [bytes(size)]


@pytest.mark.parametrize("first_byte", [0xC1, 0xA1, 0x91, 0xF2, 0xC9])
def test_rsv_bits_without_extension_close_with_1002(first_byte: int) -> None:
    fails_with(server(), masked(bytes([first_byte, 0x80]), b""), 1002)
    fails_with(client(), bytes([first_byte, 0x00]), 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcode_closes_with_1002(opcode: int) -> None:
    fails_with(server(), masked(bytes([0x80 | opcode, 0x80]), b""), 1002)
    fails_with(client(), bytes([0x80 | opcode, 0x00]), 1002)


def test_a_header_violation_fails_before_the_payload_arrives() -> None:
    fails_with(server(), b"\x83\x85" + KEY, 1002)  # reserved opcode, payload not sent yet


# ---------------------------------------------------------------- control frames


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frame_over_125_bytes_closes_with_1002(opcode: int) -> None:
    fails_with(server(), masked(bytes([0x80 | opcode, 0xFE, 0x00, 0x7E]), b"x" * 126), 1002)


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_fragmented_control_frame_closes_with_1002(opcode: int) -> None:
    fails_with(server(), masked(bytes([opcode, 0x80]), b""), 1002)


def test_server_answers_a_ping_with_an_unmasked_pong_carrying_the_same_payload() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x89\x85", b"Hello")) == [Ping(b"Hello")]
    assert conn.data_to_send() == [bytes.fromhex("8a0548656c6c6f")]


def test_client_answers_a_ping_with_a_masked_pong_carrying_the_same_payload() -> None:
    conn = client()
    assert conn.receive_data(bytes.fromhex("890548656c6c6f")) == [Ping(b"Hello")]
    [pong] = sent_frames(conn)
    assert (pong.fin, pong.opcode, pong.payload) == (True, 0xA, b"Hello")
    assert pong.mask_key is not None


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", bytes(range(125))])
def test_pong_echoes_empty_binary_and_125_byte_ping_payloads(payload: bytes) -> None:
    conn = server()
    conn.receive_data(masked(bytes([0x89, 0x80 | len(payload)]), payload))
    assert conn.data_to_send() == [bytes([0x8A, len(payload)]) + payload]


def test_unsolicited_pong_is_reported_and_not_answered() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x8a\x83", b"abc")) == [Pong(b"abc")]
    assert conn.data_to_send() == []
    assert conn.state is State.OPEN


# ---------------------------------------------------------------- fragmentation


def test_continuation_without_a_started_message_closes_with_1002() -> None:
    fails_with(server(), masked(b"\x80\x82", b"lo"), 1002)


def test_continuation_after_a_completed_message_closes_with_1002() -> None:
    conn = client()
    assert conn.receive_data(b"\x01\x03Hel\x80\x02lo") == ["Hello"]
    fails_with(conn, b"\x80\x01!", 1002)


@pytest.mark.parametrize("new_first_byte", [0x81, 0x01, 0x82, 0x02])
def test_new_data_frame_inside_a_fragmented_message_closes_with_1002(new_first_byte: int) -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x01\x83", b"Hel")) == []
    fails_with(conn, masked(bytes([new_first_byte, 0x82]), b"lo"), 1002)


def test_binary_inside_a_fragmented_binary_message_closes_with_1002() -> None:
    conn = client()
    assert conn.receive_data(b"\x02\x01a") == []
    fails_with(conn, b"\x82\x01b", 1002)


def test_pings_between_fragments_are_answered_in_order_and_the_message_is_reassembled() -> None:
    conn = server()
    stream = (
        masked(b"\x01\x83", b"Hel")
        + masked(b"\x89\x81", b"1")
        + masked(b"\x00\x81", b"l")
        + masked(b"\x89\x81", b"2")
        + masked(b"\x8a\x81", b"3")
        + masked(b"\x80\x81", b"o")
    )
    assert conn.receive_data(stream) == [Ping(b"1"), Ping(b"2"), Pong(b"3"), "Hello"]
    assert conn.data_to_send() == [b"\x8a\x011", b"\x8a\x012"]


def test_a_pong_goes_out_before_the_fragmented_message_is_complete() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x02\x81", b"a") + masked(b"\x89\x81", b"p")) == [Ping(b"p")]
    assert conn.data_to_send() == [b"\x8a\x01p"]
    assert conn.receive_data(masked(b"\x80\x81", b"b")) == [b"ab"]


def test_fragmented_binary_message_with_empty_fragments_is_reassembled() -> None:
    conn = client()
    assert conn.receive_data(b"\x02\x00\x00\x02ab\x00\x00\x80\x01c") == [b"abc"]


# ---------------------------------------------------------------- text and UTF-8

# "κόσμε" then ED A0 80 (a UTF-16 surrogate encoded as UTF-8, never valid) then "edited" (Autobahn 6.4.x).
KOSME = "κόσμε".encode()
INVALID_TEXT = KOSME + b"\xed\xa0\x80" + b"edited"


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc0\x80", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", INVALID_TEXT, b"Hello\xe2\x82"],
    ids=["ff", "overlong-nul", "overlong-slash", "above-10ffff", "surrogate", "truncated-at-end"],
)
def test_invalid_utf8_in_a_text_message_closes_with_1007(payload: bytes) -> None:
    fails_with(server(), masked(bytes([0x81, 0x80 | len(payload)]), payload), 1007)


@pytest.mark.parametrize("payload", [b"\xff", b"\x00"], ids=["1007 from a decoding error", "1002"])
def test_a_failure_is_kept_without_tracebacks_and_leaves_the_callers_exception_alone(
    payload: bytes,
) -> None:
    # Its traceback (and that of the error it came from) held the caller's frames, and with them the I/O
    # layer's connection: a reference cycle. What the caller was handling is the caller's.
    opcode = 0x81 if payload == b"\xff" else 0x8F  # invalid UTF-8, or a reserved opcode
    conn = server()
    try:
        {}["missing"]
    except KeyError as handled:
        caught = handled
        frames_before = len(traceback.extract_tb(handled.__traceback__))
        fails_with(conn, masked(bytes([opcode, 0x81]), payload), 1007 if opcode == 0x81 else 1002)
        assert len(traceback.extract_tb(handled.__traceback__)) == frames_before == 1
    failure = conn.failure
    assert failure is not None and failure.__traceback__ is None
    assert failure.__context__ is None or failure.__context__ is caught


def test_invalid_utf8_split_across_fragments_closes_with_1007() -> None:
    conn = client()
    assert conn.receive_data(b"\x01\x02\xce\xba") == []
    fails_with(conn, b"\x80\x01\xff", 1007)


def test_truncated_character_at_the_end_of_a_fragmented_message_closes_with_1007() -> None:
    conn = client()
    assert conn.receive_data(b"\x01\x02\xce\xba") == []
    assert conn.receive_data(b"\x00\x01\xe2") == []  # could still become a character
    fails_with(conn, b"\x80\x00", 1007)


def test_first_fragment_that_is_already_invalid_fails_before_fin() -> None:
    fails_with(server(), masked(b"\x01\x82", b"a\xff"), 1007)


def test_continuation_that_is_already_invalid_fails_before_fin() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x01\x81", b"a")) == []
    fails_with(conn, masked(b"\x00\x81", b"\xc0"), 1007)


def test_surrogate_prefix_ed_a0_in_a_first_fragment_fails_at_once() -> None:
    fails_with(server(), masked(b"\x01\x82", b"\xed\xa0"), 1007)


def test_ed_9f_prefix_of_a_valid_character_does_not_fail() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x01\x82", b"\xed\x9f")) == []
    assert conn.receive_data(masked(b"\x80\x81", b"\xbf")) == ["\ud7ff"]


def test_partly_received_text_frame_fails_as_soon_as_invalid_bytes_arrive() -> None:
    # The header announces 20 bytes; only the header, the key and two masked bytes are fed.
    frame = masked(b"\x81\x94", b"\xff\xfe" + b"x" * 18)
    fails_with(server(), frame[:8], 1007)


def test_partly_received_text_frame_fails_on_the_surrogate_prefix() -> None:
    frame = bytes([0x81, len(INVALID_TEXT)]) + INVALID_TEXT
    conn = client()
    assert conn.receive_data(frame[: 2 + len(KOSME)]) == []
    fails_with(conn, frame[2 + len(KOSME) : 2 + len(KOSME) + 2], 1007)


def test_text_frame_fed_one_byte_at_a_time_fails_exactly_at_the_first_invalid_byte() -> None:
    frame = masked(bytes([0x81, 0x80 | len(INVALID_TEXT)]), INVALID_TEXT)
    first_bad = 6 + len(KOSME) + 1  # the A0 after ED: "ED A0" can never start a character
    conn = server()
    for i in range(first_bad):
        assert conn.receive_data(frame[i : i + 1]) == [], i
    fails_with(conn, frame[first_bad : first_bad + 1], 1007)


def test_partly_received_continuation_frame_fails_as_soon_as_invalid_bytes_arrive() -> None:
    conn = client()
    assert conn.receive_data(b"\x01\x01a") == []
    fails_with(conn, b"\x80\x10" + b"ok\xff", 1007)


@pytest.mark.parametrize("cut", [1, 2])
def test_valid_multi_byte_character_split_across_fragments_is_accepted(cut: int) -> None:
    euro = "€".encode()  # E2 82 AC
    conn = server()
    first, rest = euro[:cut], euro[cut:]
    assert conn.receive_data(masked(bytes([0x01, 0x80 | len(first)]), first)) == []
    assert conn.receive_data(masked(bytes([0x80, 0x80 | len(rest)]), rest)) == ["€"]
    assert conn.data_to_send() == []


def test_four_byte_character_split_over_four_fragments_is_accepted() -> None:
    emoji = "🎉".encode()
    stream = b"".join(
        masked(bytes([0x01 if i == 0 else (0x80 if i == 3 else 0x00), 0x81]), emoji[i : i + 1])
        for i in range(4)
    )
    assert server().receive_data(stream) == ["🎉"]


def test_valid_text_streamed_in_pieces_is_delivered_whole() -> None:
    text = "κόσμε ünïcödé €🎉" * 20
    payload = text.encode()
    frame = masked(b"\x81\xfe" + len(payload).to_bytes(2, "big"), payload)
    assert feed_bytewise(server(), frame) == [text]


# ---------------------------------------------------------------- the closing handshake


def test_close_with_a_1_byte_payload_closes_with_1002() -> None:
    fails_with(server(), masked(b"\x88\x81", b"\x03"), 1002)


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_close_with_an_invalid_code_closes_with_1002(code: int) -> None:
    fails_with(server(), masked(b"\x88\x82", code.to_bytes(2, "big")), 1002)


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_close_with_a_valid_code_is_echoed_with_its_reason(code: int) -> None:
    payload = code.to_bytes(2, "big") + "bye ✓".encode()
    conn = server()
    assert conn.receive_data(masked(bytes([0x88, 0x80 | len(payload)]), payload)) == [
        CloseReceived(code, "bye ✓")
    ]
    assert conn.data_to_send() == [bytes([0x88, len(payload)]) + payload]
    assert conn.close_code == code
    assert conn.close_reason == "bye ✓"
    assert conn.closing_handshake_done


def test_client_echoes_a_close_masked() -> None:
    conn = client()
    assert conn.receive_data(b"\x88\x02\x0f\xa0") == [CloseReceived(4000, "")]
    [frame] = sent_frames(conn)
    assert (frame.opcode, frame.payload) == (0x8, b"\x0f\xa0")
    assert frame.mask_key is not None


def test_close_reason_that_is_not_utf8_closes_with_1007() -> None:
    fails_with(server(), masked(b"\x88\x84", b"\x03\xe8\xce\xff"), 1007)


def test_empty_close_is_answered_with_an_empty_close_and_code_1005() -> None:
    conn = server()
    assert conn.receive_data(masked(b"\x88\x80", b"")) == [CloseReceived(1005, "")]
    assert conn.data_to_send() == [b"\x88\x00"]
    assert conn.close_code == 1005
    assert conn.close_received == (1005, "")


def test_frames_after_a_close_frame_are_ignored() -> None:
    conn = server()
    stream = masked(b"\x88\x82", b"\x03\xe8") + masked(b"\x89\x81", b"p") + HELLO_MASKED
    assert conn.receive_data(stream) == [CloseReceived(1000, "")]
    assert conn.data_to_send() == [b"\x88\x02\x03\xe8"]
    assert conn.receive_data(masked(b"\x89\x81", b"p")) == []
    assert conn.data_to_send() == []


def test_no_pong_after_this_side_sent_a_close() -> None:
    conn = server()
    conn.send_close(1000)
    assert conn.data_to_send() == [b"\x88\x02\x03\xe8"]
    assert conn.receive_data(masked(b"\x89\x81", b"p")) == [Ping(b"p")]
    assert conn.data_to_send() == []


def test_data_still_arrives_after_this_side_sent_a_close() -> None:
    conn = client()
    conn.send_close(1001, "later")
    conn.data_to_send()
    assert conn.receive_data(HELLO_UNMASKED) == ["Hello"]
    assert conn.receive_data(b"\x88\x02\x03\xe9") == [CloseReceived(1001, "")]
    assert conn.data_to_send() == []  # the close was already sent: no second one
    assert conn.closing_handshake_done
    assert conn.close_sent == (1001, "later")


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.send_message("x"),
        lambda c: c.send_message(b"x"),
        lambda c: c.send_fragment("x", fin=False),
        lambda c: c.send_ping(b""),
        lambda c: c.send_pong(b""),
        lambda c: c.send_close(1000),
    ],
    ids=["text", "binary", "fragment", "ping", "pong", "close"],
)
def test_nothing_can_be_sent_after_a_close_frame(send: Callable[[Connection], None]) -> None:
    for conn in (server(), client()):
        conn.receive_data(masked(b"\x88\x80", b"") if conn.role is Role.SERVER else b"\x88\x00")
        conn.data_to_send()
        with pytest.raises(UsageError):
            send(conn)
        assert conn.data_to_send() == []


def test_nothing_can_be_sent_after_this_side_sent_a_close() -> None:
    conn = server()
    conn.send_close(1000)
    with pytest.raises(UsageError, match="closing handshake"):
        conn.send_message("late")
    with pytest.raises(UsageError):
        conn.send_ping()


def test_server_should_close_tcp_once_it_answered_the_clients_close() -> None:
    conn = server()
    assert not conn.transport_should_close
    conn.receive_data(masked(b"\x88\x82", b"\x03\xe8"))
    assert conn.transport_should_close


def test_server_should_close_tcp_once_the_client_answered_its_close() -> None:
    conn = server()
    conn.send_close(1000)
    assert not conn.transport_should_close
    conn.receive_data(masked(b"\x88\x82", b"\x03\xe8"))
    assert conn.closing_handshake_done
    assert conn.transport_should_close


def test_client_waits_for_the_server_to_close_tcp_after_the_closing_handshake() -> None:
    conn = client()
    conn.receive_data(b"\x88\x02\x03\xe8")
    assert conn.closing_handshake_done
    assert not conn.transport_should_close
    other = client()
    other.send_close(1000)
    other.receive_data(b"\x88\x02\x03\xe8")
    assert other.closing_handshake_done
    assert not other.transport_should_close


def test_eof_without_a_close_frame_gives_close_code_1006() -> None:
    conn = client()
    assert conn.receive_eof() == []
    assert conn.state is State.CLOSED
    assert conn.close_code == 1006
    assert conn.receive_data(HELLO_UNMASKED) == []


def test_eof_after_the_closing_handshake_keeps_the_peers_close_code() -> None:
    conn = client()
    conn.receive_data(b"\x88\x04\x0f\xa0ok")
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert (conn.close_code, conn.close_reason) == (4000, "ok")


def test_a_failed_connection_sends_one_close_and_ignores_further_input() -> None:
    conn = server()
    fails_with(conn, HELLO_UNMASKED, 1002)
    assert conn.receive_data(HELLO_MASKED) == []
    assert conn.data_to_send() == []


def test_failure_close_reason_fits_in_a_control_frame() -> None:
    conn = server(max_message_size=100)
    conn.receive_data(masked(b"\x82\xff" + (2**40).to_bytes(8, "big"), b""))
    [frame] = sent_frames(conn)
    assert frame.opcode == 0x8
    assert len(frame.payload) <= 125
    frame.payload[2:].decode("utf-8")


# ---------------------------------------------------------------- size limits


def test_default_max_message_size_is_1_mib_checked_on_the_header() -> None:
    assert server().receive_data(b"\x82\xff" + MiB.to_bytes(8, "big") + KEY) == []
    fails_with(server(), b"\x82\xff" + (MiB + 1).to_bytes(8, "big") + KEY, 1009)


def test_text_frame_over_max_message_size_fails_on_the_header() -> None:
    # 101 bytes announced (7-bit length), two sent: the limit is checked before any payload.
    fails_with(server(max_message_size=100), b"\x81\xe5" + KEY + xor(b"ab"), 1009)


def test_frame_over_max_frame_size_closes_with_1009_before_its_payload() -> None:
    conn = server(max_message_size=None, max_frame_size=100)
    assert conn.receive_data(masked(b"\x82\xe4", b"a" * 100)) == [b"a" * 100]
    fails_with(conn, b"\x82\xe5" + KEY, 1009)


def test_max_frame_size_applies_to_each_fragment() -> None:
    conn = server(max_message_size=1000, max_frame_size=10)
    assert conn.receive_data(masked(b"\x02\x8a", b"a" * 10)) == []
    fails_with(conn, masked(b"\x80\x8b", b"a" * 11), 1009)


@pytest.mark.parametrize("limits", [(10, 10), (1000, 10), (None, 10)], ids=str)
def test_control_frames_are_not_held_to_max_frame_size(limits: tuple[int | None, int]) -> None:
    # Control frames carry at most 125 bytes (RFC 6455 §5.5) and are no messages: a small frame limit
    # must not fail the peer's close frame (or a ping) with 1009. It did when the limits differed.
    max_message_size, max_frame_size = limits
    conn = server(max_message_size=max_message_size, max_frame_size=max_frame_size)
    assert conn.receive_data(masked(b"\x89\x8b", b"a" * 11)) == [Ping(b"a" * 11)]
    close = (1000).to_bytes(2, "big") + b"bye, see you"
    [event] = conn.receive_data(masked(b"\x88\x8e", close))
    assert event == CloseReceived(1000, "bye, see you")
    assert conn.close_code == 1000
    fails_with(
        server(max_message_size=1000, max_frame_size=10), masked(b"\x82\x8b", b"a" * 11), 1009
    )


def test_fragmented_message_over_max_message_size_closes_with_1009_on_the_header() -> None:
    conn = server(max_message_size=100)
    assert conn.receive_data(masked(b"\x02\xbc", b"a" * 60)) == []
    assert conn.receive_data(masked(b"\x89\x80", b"")) == [Ping(b"")]  # control frames do not count
    conn.data_to_send()
    fails_with(conn, b"\x80\xbc" + KEY, 1009)  # 60 + 60 > 100; payload not sent yet


def test_fragmented_text_message_over_max_message_size_closes_with_1009() -> None:
    conn = client(max_message_size=10)
    assert conn.receive_data(b"\x01\x05abcde") == []
    fails_with(conn, b"\x80\x06", 1009)


def test_message_exactly_at_max_message_size_is_accepted() -> None:
    conn = server(max_message_size=100)
    stream = masked(b"\x01\xb2", b"a" * 50) + masked(b"\x80\xb2", b"b" * 50)
    assert conn.receive_data(stream) == ["a" * 50 + "b" * 50]


def test_no_limit_when_max_message_size_is_none() -> None:
    conn = server(max_message_size=None)
    assert conn.receive_data(b"\x82\xff" + (1 << 40).to_bytes(8, "big") + KEY) == []
    assert conn.data_to_send() == []


# ---------------------------------------------------------------- input_pending


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (masked(b"\x83\x80", b""), 1002),  # reserved opcode
        (HELLO_UNMASKED, 1002),  # unmasked
        (masked(b"\x80\x81", b"x"), 1002),  # continuation without a message
        (masked(b"\x81\x81", b"\xff"), 1007),  # complete frame with invalid UTF-8
        (masked(b"\x88\x81", b"\x03"), 1002),  # 1-byte close payload
        (b"\x82\xff" + (2 * MiB).to_bytes(8, "big") + KEY, 1009),  # too big
    ],
    ids=["opcode", "unmasked", "continuation", "utf8", "close", "too-big"],
)
def test_message_before_an_invalid_frame_is_returned_first_with_input_pending(
    bad_frame: bytes, code: int
) -> None:
    conn = server()
    assert conn.receive_data(HELLO_MASKED + bad_frame) == ["Hello"]
    assert conn.input_pending
    assert conn.data_to_send() == []
    assert conn.state is State.OPEN
    events = conn.receive_data(b"")
    assert not conn.input_pending
    assert_failed(conn, events, code)


def test_message_before_a_partial_invalid_text_frame_is_returned_first_with_input_pending() -> None:
    # As above, but the invalid text frame is only partly received (it fails before its end, §8.1):
    # the message before it must still reach the application before the close frame is queued.
    conn = server()
    partial = masked(b"\x81\x94", b"\xff" + b"x" * 19)[:8]
    assert conn.receive_data(HELLO_MASKED + partial) == ["Hello"]
    assert conn.input_pending
    assert conn.data_to_send() == []
    assert_failed(conn, conn.receive_data(b""), 1007)


def test_application_can_answer_before_the_pending_error_closes() -> None:
    conn = server()
    assert conn.receive_data(HELLO_MASKED + masked(b"\x83\x80", b"")) == ["Hello"]
    conn.send_message("reply")
    events = conn.receive_data(b"")
    assert isinstance(events[-1], ProtocolFailure)
    frames = sent_frames(conn)
    assert [(f.opcode, f.payload[:2]) for f in frames] == [(0x1, b"re"), (0x8, b"\x03\xea")]


def test_bytes_received_while_an_error_is_pending_are_not_processed() -> None:
    conn = server()
    assert conn.receive_data(HELLO_MASKED + masked(b"\x83\x80", b"")) == ["Hello"]
    assert conn.receive_data(HELLO_MASKED) == []
    assert conn.input_pending
    assert conn.data_to_send() == []
    assert_failed(conn, conn.receive_data(b""), 1002)


def test_invalid_frame_with_no_message_before_it_fails_at_once() -> None:
    conn = server()
    events = conn.receive_data(masked(b"\x89\x80", b"") + masked(b"\x83\x80", b""))
    assert not conn.input_pending
    assert events[0] == Ping(b"")
    assert isinstance(events[-1], ProtocolFailure)
    frames = sent_frames(conn)
    assert [f.opcode for f in frames] == [0xA, 0x8]


def test_receive_data_with_nothing_pending_and_no_bytes_returns_nothing() -> None:
    conn = server()
    assert conn.receive_data(b"") == []
    assert conn.data_to_send() == []


# ---------------------------------------------------------------- sending


def test_server_sends_the_rfc_unmasked_hello() -> None:
    conn = server()
    conn.send_message("Hello")
    assert conn.data_to_send() == [HELLO_UNMASKED]


def test_server_sends_bytes_as_a_binary_frame() -> None:
    conn = server()
    conn.send_message(b"\x00\x01")
    conn.send_message(bytearray(b"\x02"))
    conn.send_message(memoryview(b"\x03"))
    assert b"".join(conn.data_to_send()) == b"\x82\x02\x00\x01\x82\x01\x02\x82\x01\x03"


def test_client_frames_are_masked_and_unmask_to_the_message() -> None:
    conn = client()
    conn.send_message("Hello")
    [data] = conn.data_to_send()
    assert data[:2] == b"\x81\x85"
    key = data[2:6]
    assert xor(data[6:], key) == b"Hello"


def test_client_uses_a_fresh_mask_key_for_every_frame() -> None:
    conn = client()
    for _ in range(64):
        conn.send_message(b"same payload")
    conn.send_ping(b"p")
    frames = sent_frames(conn)
    assert all(f.mask_key is not None for f in frames)
    assert all(f.payload == b"same payload" for f in frames[:64])
    assert len({f.mask_key for f in frames}) >= 60


@pytest.mark.parametrize(
    ("length", "server_header"),
    [
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_sent_lengths_use_the_minimal_encoding(length: int, server_header: bytes) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    conn = server()
    conn.send_message(payload)
    assert b"".join(conn.data_to_send()) == server_header + payload
    conn = client()
    conn.send_message(payload)
    data = b"".join(conn.data_to_send())
    client_header = bytes([server_header[0], server_header[1] | 0x80]) + server_header[2:]
    assert data[: len(client_header)] == client_header
    key = data[len(client_header) : len(client_header) + 4]
    assert xor(data[len(client_header) + 4 :], key) == payload


def test_send_fragment_produces_text_continuation_continuation_fin() -> None:
    conn = server()
    conn.send_fragment("Hel", fin=False)
    conn.send_fragment("l", fin=False)
    conn.send_fragment("o", fin=True)
    assert conn.data_to_send() == [b"\x01\x03Hel", b"\x00\x01l", b"\x80\x01o"]


def test_client_send_fragment_binary_frames_are_masked_with_the_right_fin_bits() -> None:
    conn = client()
    conn.send_fragment(b"ab", fin=False)
    conn.send_fragment(b"cd", fin=True)
    frames = sent_frames(conn)
    assert [(f.fin, f.opcode, f.payload) for f in frames] == [(False, 2, b"ab"), (True, 0, b"cd")]
    assert all(f.mask_key is not None for f in frames)


def test_a_single_fragment_with_fin_is_a_whole_message() -> None:
    conn = server()
    conn.send_fragment("x", fin=True)
    conn.send_fragment(b"y", fin=True)
    assert conn.data_to_send() == [b"\x81\x01x", b"\x82\x01y"]


def test_fragments_of_mixed_types_are_refused() -> None:
    conn = server()
    conn.send_fragment("a", fin=False)
    with pytest.raises(UsageError):
        conn.send_fragment(b"b", fin=True)


def test_send_message_in_the_middle_of_a_fragmented_message_is_refused() -> None:
    conn = server()
    conn.send_fragment(b"a", fin=False)
    with pytest.raises(UsageError, match="fragmented message is being sent"):
        conn.send_message(b"b")
    conn.send_ping(b"p")  # control frames may be interleaved (RFC 6455 §5.4)
    conn.send_fragment(b"c", fin=True)
    assert conn.data_to_send() == [b"\x02\x01a", b"\x89\x01p", b"\x80\x01c"]
    conn.send_fragment(b"d", fin=False)
    conn.send_close(1000)
    with pytest.raises(
        UsageError, match="closing handshake"
    ):  # closing says more than the fragment
        conn.send_message(b"e")


_AT_ONCE_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("message"),
            st.one_of(
                st.binary(max_size=20),
                st.text(max_size=20),
                st.sampled_from([16383, 16384, 20000]).map(lambda n: b"b" * n),
                st.sampled_from([4095, 8000]).map(lambda n: "\u20ac" * n),  # 3 bytes each
            ),
            st.booleans(),
        ),
        st.tuples(st.just("ping")),
        st.tuples(st.just("write")),
    ),
    max_size=12,
)


@FAST
@given(role=st.sampled_from([Role.SERVER, Role.CLIENT]), ops=_AT_ONCE_OPS)
def test_a_frame_handed_back_at_once_is_what_the_queue_would_have_sent(
    role: Role, ops: list[tuple[object, ...]]
) -> None:
    """`send_message(data, at_once=True)` returns the frame only when nothing is queued before it and it
    goes out as built (a server's, no extension): one piece under 16 KiB, header and payload from 16 KiB
    on. Writing it then leaves the bytes on the wire as they would have been."""
    conn, reference = Connection(role), Connection(role)
    wire: list[bytes] = []
    expected: list[bytes] = []
    for op in ops:
        if op[0] == "message":
            data = op[1]
            assert isinstance(data, str | bytes) and isinstance(op[2], bool)
            queued_before = bool(conn._outgoing)
            frame = conn.send_message(data, op[2])
            assert reference.send_message(data) is None
            encoded = data.encode() if isinstance(data, str) else data
            assert (frame is not None) == (op[2] and not queued_before and role is Role.SERVER)
            if len(encoded) < 16 * 1024:
                assert frame is None or type(frame) is bytes
            else:
                assert frame is None or (type(frame) is tuple and frame[1] == encoded)
            if type(frame) is bytes:
                wire.append(frame)
            elif frame is not None:
                wire += frame
        elif op[0] == "ping":
            conn.send_ping(b"p")
            reference.send_ping(b"p")
        else:
            wire += conn.data_to_send()
            expected += reference.data_to_send()
    wire += conn.data_to_send()
    expected += reference.data_to_send()
    if role is Role.SERVER:
        assert b"".join(wire) == b"".join(expected)
    else:  # each frame has its own mask: compare what the peer reads
        assert [(f.opcode, f.payload) for f in read_frames(b"".join(wire))] == [
            (f.opcode, f.payload) for f in read_frames(b"".join(expected))
        ]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_a_large_frame_handed_back_holds_its_own_copy_of_a_mutable_buffer(kind: type) -> None:
    """The payload handed back may be written later (a partial send): the caller's buffer may change."""
    buffer = bytearray(b"a" * 20000)
    frame = server().send_message(kind(buffer), True)
    assert type(frame) is tuple
    header, payload = frame
    buffer[:] = b"b" * 20000
    assert header == b"\x82\x7e\x4e\x20" and payload == b"a" * 20000 and type(payload) is bytes
    message = b"c" * 20000
    frame = server().send_message(message, True)
    assert type(frame) is tuple and frame[0] == b"\x82\x7e\x4e\x20" and frame[1] is message


def test_a_frame_is_not_handed_back_when_sending_is_refused() -> None:
    conn = server()
    assert conn.send_message(b"x", True) == b"\x82\x01x"
    conn.send_close(1000)
    with pytest.raises(UsageError, match="closing handshake"):
        conn.send_message(b"y", True)


def test_send_ping_pong_and_close_bytes() -> None:
    conn = server()
    conn.send_ping(b"Hello")
    conn.send_pong(b"")
    conn.send_close(1000, "bye")
    assert conn.data_to_send() == [
        bytes.fromhex("890548656c6c6f"),
        b"\x8a\x00",
        b"\x88\x05\x03\xe8bye",
    ]
    assert conn.state is State.CLOSING
    assert conn.close_sent == (1000, "bye")


def test_send_close_without_a_code_sends_an_empty_close() -> None:
    conn = server()
    conn.send_close(None)
    assert conn.data_to_send() == [b"\x88\x00"]


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 5000])
def test_send_close_with_a_code_that_may_not_be_sent_is_refused(code: int) -> None:
    with pytest.raises(UsageError):
        server().send_close(code)


def test_control_frames_over_125_bytes_cannot_be_sent() -> None:
    conn = server()
    with pytest.raises(UsageError):
        conn.send_ping(bytes(126))
    with pytest.raises(UsageError):
        conn.send_pong(bytes(126))
    with pytest.raises(UsageError):
        conn.send_close(1000, "x" * 124)
    conn.send_ping(bytes(125))
    conn.send_close(1000, "x" * 123)
    assert [len(f.payload) for f in sent_frames(conn)] == [125, 125]


# ---------------------------------------------------------------- round trips (property tests)

messages = st.lists(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        # The length-encoding boundaries, and a payload large enough to be queued in two chunks.
        st.sampled_from([125, 126, 65535, 65536, 70000]).map(lambda n: b"\xa5" * n),
    ),
    max_size=6,
)


def send_all(
    sender: Connection, items: list[str | bytes], data: st.DataObject
) -> list[str | bytes | Ping]:
    """Send `items` with random fragmentation and pings; return the events the receiver should see."""
    expected: list[str | bytes | Ping] = []
    for item in items:
        if data.draw(st.booleans(), label="ping before"):
            ping = data.draw(st.binary(max_size=125), label="ping")
            sender.send_ping(ping)
            expected.append(Ping(ping))
        if data.draw(st.booleans(), label="fragment"):
            cuts = data.draw(st.lists(st.integers(0, len(item)), max_size=4), label="cuts")
            pieces = split_at(item, cuts)
            for i, piece in enumerate(pieces):
                sender.send_fragment(piece, fin=i == len(pieces) - 1)
        else:
            sender.send_message(item)
        expected.append(item)
    return expected


def deliver(receiver: Connection, stream: bytes, data: st.DataObject) -> list[Event]:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="chunks")
    events: list[Event] = []
    for chunk in split_at(stream, cuts):
        events += receiver.receive_data(chunk)
    return events


@FAST
@given(items=messages, data=st.data())
def test_client_output_fed_to_a_server_gives_back_the_messages(
    items: list[str | bytes], data: st.DataObject
) -> None:
    sender, receiver = client(), server()
    expected = send_all(sender, items, data)
    stream = b"".join(sender.data_to_send())
    assert deliver(receiver, stream, data) == expected
    assert [f.opcode for f in sent_frames(receiver)] == [0xA] * sum(
        isinstance(e, Ping) for e in expected
    )


@FAST
@given(items=messages, data=st.data())
def test_server_output_fed_to_a_client_gives_back_the_messages(
    items: list[str | bytes], data: st.DataObject
) -> None:
    sender, receiver = server(), client()
    expected = send_all(sender, items, data)
    stream = b"".join(sender.data_to_send())
    assert deliver(receiver, stream, data) == expected


@FAST
@given(text=st.text(min_size=1, max_size=200), data=st.data())
def test_text_fragmented_at_any_byte_offset_is_reassembled(text: str, data: st.DataObject) -> None:
    payload = text.encode()
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=5), label="cuts")
    pieces = split_at(payload, cuts)
    stream = b"".join(
        encode_frame(
            Opcode.TEXT if i == 0 else Opcode.CONTINUATION,
            piece,
            fin=i == len(pieces) - 1,
            mask_key=KEY,
        )
        for i, piece in enumerate(pieces)
    )
    conn = server()
    assert deliver(conn, stream, data) == [text]
    assert conn.data_to_send() == []


def test_read_frames_helper_reads_what_encode_frame_writes() -> None:
    frame = read_frames(encode_frame(Opcode.BINARY, b"x" * 300, mask_key=KEY))[0]
    assert (frame.opcode, frame.payload, frame.mask_key, frame.header_length) == (
        2,
        b"x" * 300,
        KEY,
        8,
    )


def test_a_stream_of_empty_continuation_frames_does_not_grow_memory() -> None:
    conn = server(max_fragments=None)
    conn.receive_data(masked(b"\x02\x82", b"ab"))  # a binary message begins, FIN clear
    empty_continuation = masked(b"\x00\x80", b"")
    for _ in range(3):
        assert conn.receive_data(empty_continuation * 10_000) == []
        # Parsed in batches (the event loop runs others in between): the I/O layer goes on with b"".
        while conn.input_pending:
            assert conn.receive_data(b"") == []
    assert len(conn._msg_parts) + len(conn._msg_tail) == 1
    assert not conn._buffer
    assert conn.receive_data(masked(b"\x80\x81", b"c")) == [b"abc"]


def test_frames_that_make_no_message_are_parsed_in_batches() -> None:
    # 100,000 empty fragments in one read would hold the event loop for ~0.3 s: they are parsed by the
    # 4096, and the I/O layer lets other connections run in between.
    conn = server(max_fragments=None)
    conn.receive_data(masked(b"\x02\x82", b"ab"))
    conn.receive_data(masked(b"\x00\x80", b"") * 100_000 + masked(b"\x80\x81", b"c"))
    batches = 1
    events = []
    while conn.input_pending:
        events += conn.receive_data(b"")
        batches += 1
    assert events == [b"abc"]
    assert batches >= 100_000 // 4096


@pytest.mark.parametrize("opcode", [0x9, 0xA])
def test_control_frames_are_parsed_in_batches_too(opcode: int) -> None:
    # 43,690 empty pings fit in one 256 KiB read: parsed at once they held the loop for ~125 ms.
    conn = server()
    frame = masked(bytes([0x80 | opcode, 0x80]), b"")
    events = conn.receive_data(frame * 43_690 + masked(b"\x82\x81", b"z"))
    batches = 1
    while conn.input_pending:
        events += conn.receive_data(b"")
        batches += 1
    assert len(events) == 43_691
    assert events[-1] == b"z"
    assert batches >= 43_690 // 4096


@pytest.mark.parametrize(
    ("max_message_size", "max_fragments", "allowed"),
    [(1 << 20, -1, 16_384), (4096, -1, 1024), (1 << 20, 10, 10), (None, -1, None)],
)
def test_a_message_in_more_frames_than_max_fragments_fails_with_1009(
    max_message_size: int | None, max_fragments: int, allowed: int | None
) -> None:
    # Each frame costs a few µs however small: the frames of one message are bounded (by default one
    # per 64 bytes of max_message_size) as its size is.
    conn = server(max_message_size=max_message_size, max_fragments=max_fragments)
    frames = allowed or 50_000
    stream = masked(b"\x02\x81", b"a") + masked(b"\x00\x80", b"") * (frames - 2)
    events = conn.receive_data(stream + masked(b"\x80\x81", b"b"))
    while conn.input_pending:
        events += conn.receive_data(b"")
    assert events == [b"ab"]  # exactly `allowed` frames: one message
    stream = masked(b"\x02\x81", b"a") + masked(b"\x00\x80", b"") * (frames - 1)
    events = conn.receive_data(stream + masked(b"\x80\x81", b"b"))
    while conn.input_pending:
        events += conn.receive_data(b"")
    if allowed is None:
        assert events == [b"ab"]
    else:
        assert_failed(conn, events, 1009)
        assert f"more than {allowed} frames" in events[-1].message  # type: ignore[union-attr]


@pytest.mark.parametrize("piece", [1, 2, 3, 7])
def test_a_text_frame_streamed_over_many_reads_counts_as_one_frame(piece: int) -> None:
    # Text is decoded as it arrives, a frame in as many pieces as reads: each frame still counts once.
    frames = [
        masked(b"\x01\x81", b"a"),
        masked(b"\x00\x85", b"bcdef"),
        masked(b"\x80\x85", b"ghijk"),
    ]
    conn = server(max_fragments=3)
    stream = b"".join(frames)
    events = []
    for start in range(0, len(stream), piece):
        events += conn.receive_data(stream[start : start + piece])
    assert events == ["abcdefghijk"]  # 3 frames: within max_fragments=3
    conn = server(max_fragments=3)
    stream = b"".join(frames[:2]) + masked(b"\x00\x85", b"ghijk") + masked(b"\x80\x81", b"l")
    events = []
    for start in range(0, len(stream), piece):
        events += conn.receive_data(stream[start : start + piece])
    assert_failed(conn, events, 1009)  # the fourth frame is one too many


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_message_size": 1e6}, TypeError),
        ({"max_frame_size": 1.5}, TypeError),
        ({"max_message_size": True}, TypeError),
        ({"max_fragments": -5}, ValueError),
        ({"max_fragments": 0}, ValueError),
        ({"max_frame_size": -5}, ValueError),
        ({"max_message_size": [1 << 20]}, TypeError),
    ],
)
def test_limits_that_are_not_sizes_are_refused(options: dict[str, object], error: type) -> None:
    with pytest.raises(error, match=r"whole number|size in bytes|number of frames") as caught:
        server(**options)  # type: ignore[arg-type]
    assert caught.value.__context__ is None  # one error, not one raised while handling another


def test_limits_are_checked_whatever_connections_had_equal_ones() -> None:
    # Connections with the same limits share them, checked once: True equals 1 but is not a size.
    assert server(max_message_size=1, max_fragments=1)._max_message_size == 1
    for options in ({"max_message_size": True}, {"max_fragments": True}):
        with pytest.raises(TypeError, match="whole number"):
            server(**({"max_message_size": 1, "max_fragments": 1} | options))


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [
        (2, bytes(range(256)) * 400),
        (1, ("é✓🌍a" * 10_000).encode()),
    ],  # text split inside characters
)
def test_a_message_of_one_byte_fragments_is_held_in_few_objects(
    opcode: int, payload: bytes
) -> None:
    # One object per byte would cost 35-50 times the message's size (a 1 MiB message, 35-56 MiB).
    conn = server(max_fragments=None)
    frames = [
        masked(bytes([opcode if i == 0 else 0, 0x81]), payload[i : i + 1])
        for i in range(len(payload) - 1)
    ]
    for start in range(0, len(frames), 5000):
        assert conn.receive_data(b"".join(frames[start : start + 5000])) == []
        while conn.input_pending:  # parsed in batches of 4096 frames
            assert conn.receive_data(b"") == []
    held = len(conn._msg_parts) + len(conn._msg_tail)
    assert held <= len(payload) // 256 + 256, held
    [message] = conn.receive_data(masked(b"\x80\x81", payload[-1:]))
    assert message == (payload.decode() if opcode == 1 else payload)


def test_held_pongs_answer_only_the_latest_ping_when_released() -> None:
    conn = server()
    conn.hold_pongs(True)
    pings = b"".join(masked(b"\x89\x84", i.to_bytes(4, "big")) for i in range(1000))
    events = conn.receive_data(pings)
    assert len(events) == 1000
    assert conn.data_to_send() == []
    conn.hold_pongs(False)
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0xA, (999).to_bytes(4, "big"))]
    # Released: the next ping is answered at once again.
    conn.receive_data(masked(b"\x89\x81", b"x"))
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(0xA, b"x")]


def test_releasing_held_pongs_without_a_ping_sends_nothing() -> None:
    conn = server()
    conn.hold_pongs(True)
    conn.hold_pongs(False)
    assert conn.data_to_send() == []


# ---------------------------------------------------------------- what input makes the core send

# Frames a peer may send a server (masked), and a few bytes of anything: valid or not, whole or cut.
peer_frames = st.one_of(
    st.builds(lambda p: encode_frame(Opcode.TEXT, p.encode(), mask_key=KEY), st.text(max_size=20)),
    st.builds(lambda p: encode_frame(Opcode.BINARY, p, mask_key=KEY), st.binary(max_size=300)),
    st.builds(
        lambda p, fin: encode_frame(Opcode.BINARY, p, fin=fin, mask_key=KEY),
        st.binary(max_size=20),
        st.booleans(),
    ),
    st.builds(lambda p: encode_frame(Opcode.CONTINUATION, p, mask_key=KEY), st.binary(max_size=20)),
    st.builds(lambda p: encode_frame(Opcode.PING, p, mask_key=KEY), st.binary(max_size=125)),
    st.builds(lambda p: encode_frame(Opcode.PONG, p, mask_key=KEY), st.binary(max_size=125)),
    st.builds(
        lambda code: encode_frame(Opcode.CLOSE, code.to_bytes(2, "big"), mask_key=KEY),
        st.sampled_from([1000, 1001, 999, 3000]),
    ),
    st.binary(min_size=1, max_size=8),
)


@FAST
@given(frames=st.lists(peer_frames, max_size=12), data=st.data())
def test_input_makes_the_core_send_only_with_a_control_event_saying_why(
    frames: list[bytes], data: st.DataObject
) -> None:
    # The contract the asyncio layer relies on to skip writing after a read of messages only: bytes to
    # send (a pong, a close frame) and `transport_should_close` come from input only with a Ping,
    # CloseReceived or ProtocolFailure event in the same batch.
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    connection = server()
    for chunk in split_at(stream, cuts):
        # A batch, and the one `input_pending` asks for (the I/O layer handles them one by one).
        for batch in (chunk, b""):
            if batch or connection.input_pending:
                should_close = connection.transport_should_close
                events = connection.receive_data(batch)
                out = connection.data_to_send()
                if out or connection.transport_should_close is not should_close:
                    assert any(
                        isinstance(e, Ping | CloseReceived | ProtocolFailure) for e in events
                    ), (
                        events,
                        out,
                    )


@pytest.mark.parametrize("size", [64, 20000, 80000])
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("at_once", [False, True])
def test_a_memoryview_of_other_items_or_strides_is_sent_as_its_bytes(
    size: int, role: Role, at_once: bool
) -> None:
    """A frame's length is the buffer's bytes, not its item count (20000 ints are 80000 bytes)."""
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    for view in odd_views(data):
        sender, receiver = (
            Connection(role),
            Connection(Role.CLIENT if role is Role.SERVER else Role.SERVER),
        )
        frame = sender.send_message(view, at_once)
        wire = (
            b"".join(sender.data_to_send())
            if frame is None
            else b"".join([frame] if isinstance(frame, bytes) else frame)
        )
        assert receiver.receive_data(wire) == [data]
        sender, receiver = (
            Connection(role),
            Connection(Role.CLIENT if role is Role.SERVER else Role.SERVER),
        )
        sender.send_fragment(view, fin=False)
        sender.send_fragment(view, fin=True)
        assert receiver.receive_data(b"".join(sender.data_to_send())) == [data + data]


def test_ping_and_pong_data_may_be_a_memoryview_of_other_items() -> None:
    conn = server()
    conn.send_ping(memoryview(b"abcd").cast("i"))
    conn.send_pong(memoryview(b"abcdef")[::2])
    assert conn.data_to_send() == [b"\x89\x04abcd", b"\x8a\x03ace"]
    with pytest.raises(UsageError, match="128 bytes exceeds 125"):
        conn.send_ping(memoryview(bytes(128)).cast("i"))


def test_after_the_tcp_connection_closed_nothing_can_be_sent_and_the_errors_say_why() -> None:
    conn = server()
    conn.receive_eof()
    for send, what in [
        (lambda: conn.send_close(1000), "cannot send a close frame: the connection is closed"),
        (lambda: conn.send_ping(b""), "cannot send a ping: the connection is closed"),
        (lambda: conn.send_pong(b""), "cannot send a pong: the connection is closed"),
        (lambda: conn.send_message("x"), "the closing handshake has started"),
    ]:
        with pytest.raises(UsageError, match=what):
            send()
    assert conn.data_to_send() == []
    assert conn.close_code == 1006


@pytest.mark.parametrize("code", [1000, 1002])
def test_a_protocol_error_after_this_sides_close_leaves_the_code_1006_not_one_never_sent(
    code: int,
) -> None:
    # RFC 6455 §7.1.5: without a close frame received, the close code is 1006. This side sent its
    # close; the peer then broke the protocol (an unmasked frame) instead of answering: no close frame
    # was sent for that (even when this side's own code happens to be 1002).
    conn = server()
    conn.send_close(code, "bye")
    conn.data_to_send()
    events = conn.receive_data(b"\x81\x02hi")
    assert [type(e).__name__ for e in events] == ["ProtocolFailure"]
    assert conn.data_to_send() == []  # one close frame only: the first
    conn.receive_eof()
    assert (conn.close_code, conn.close_reason) == (1006, "")
    # Failing first, the code is the one sent with the failure.
    failed = server()
    failed.receive_data(b"\x81\x02hi")
    assert failed.close_code == 1002
    failed.receive_eof()
    assert failed.close_code == 1002


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_text_that_utf8_cannot_encode_is_a_usage_error_and_the_connection_goes_on(
    role: Role,
) -> None:
    # As send_close refuses such a reason: a lone surrogate is the caller's bug, not an encoding crash.
    conn = Connection(role)
    with pytest.raises(UsageError, match="not valid Unicode"):
        conn.send_message("lone \ud800")
    with pytest.raises(UsageError, match="not valid Unicode"):
        conn.send_fragment("\udc00", fin=True)
    conn.send_message("fine")
    assert [f.payload for f in read_frames(b"".join(conn.data_to_send()))] == [b"fine"]


@pytest.mark.parametrize("option", ["max_message_size", "max_frame_size"])
def test_a_negative_limit_is_refused_when_the_connection_is_made(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        Connection(Role.SERVER, **{option: -5})
