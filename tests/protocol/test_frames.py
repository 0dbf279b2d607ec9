"""Byte-level tests of `upwire.protocol.frames`: headers, length encodings, masking and the frame parser."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.exceptions import PayloadTooBig, ProtocolError
from upwire.protocol.frames import (
    FrameParser,
    MaskKeys,
    Opcode,
    apply_mask,
    check_header,
    decode_header,
    encode_frame,
    encode_header,
    frame_size,
)

from .wire import KEY, split_at, xor

FAST = settings(max_examples=200, deadline=None)

# RFC 6455 §5.7 examples.
HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HELLO_FRAGMENTS = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
PING_HELLO = bytes.fromhex("890548656c6c6f")
PONG_HELLO_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")
BINARY_256_HEADER = bytes.fromhex("827e0100")
BINARY_64K_HEADER = bytes.fromhex("827f0000000000010000")

RESERVED_OPCODES = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


def parse_all(data: bytes, *, expect_masked: bool | None) -> list[tuple[bool, int, bytes]]:
    parser = FrameParser(expect_masked=expect_masked)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append((frame.fin, frame.opcode, frame.payload))
    assert parser.buffered == 0
    return frames


# ---------------------------------------------------------------- RFC 6455 §5.7 vectors


def test_unmasked_hello_header_decodes_as_rfc_example() -> None:
    header = decode_header(HELLO_UNMASKED)
    assert header is not None
    assert (header.fin, header.rsv, header.opcode, header.masked) == (True, 0, Opcode.TEXT, False)
    assert (header.length, header.header_length, header.length_bits) == (5, 2, 7)
    assert header.mask_key is None


def test_masked_hello_header_carries_the_rfc_mask_key() -> None:
    header = decode_header(HELLO_MASKED)
    assert header is not None
    assert header.masked
    assert header.mask_key == KEY
    assert (header.length, header.header_length) == (5, 6)


def test_masked_hello_unmasks_to_hello() -> None:
    assert parse_all(HELLO_MASKED, expect_masked=True) == [(True, Opcode.TEXT, b"Hello")]


def test_fragmented_hello_parses_as_text_then_continuation() -> None:
    assert parse_all(HELLO_FRAGMENTS, expect_masked=False) == [
        (False, Opcode.TEXT, b"Hel"),
        (True, Opcode.CONTINUATION, b"lo"),
    ]


def test_rfc_ping_and_masked_pong_parse() -> None:
    assert parse_all(PING_HELLO, expect_masked=False) == [(True, Opcode.PING, b"Hello")]
    assert parse_all(PONG_HELLO_MASKED, expect_masked=True) == [(True, Opcode.PONG, b"Hello")]


def test_256_byte_binary_uses_16_bit_length() -> None:
    header = decode_header(BINARY_256_HEADER)
    assert header is not None
    assert (header.opcode, header.length, header.length_bits, header.header_length) == (
        2,
        256,
        16,
        4,
    )
    payload = bytes(range(256))
    assert parse_all(BINARY_256_HEADER + payload, expect_masked=False) == [
        (True, Opcode.BINARY, payload)
    ]


def test_64_kib_binary_uses_64_bit_length() -> None:
    header = decode_header(BINARY_64K_HEADER)
    assert header is not None
    assert (header.length, header.length_bits, header.header_length) == (65536, 64, 10)
    payload = b"\xab" * 65536
    assert parse_all(BINARY_64K_HEADER + payload, expect_masked=False) == [
        (True, Opcode.BINARY, payload)
    ]


def test_encode_frame_reproduces_the_rfc_examples() -> None:
    assert encode_frame(Opcode.TEXT, b"Hello") == HELLO_UNMASKED
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=KEY) == HELLO_MASKED
    assert (
        encode_frame(Opcode.TEXT, b"Hel", fin=False) + encode_frame(Opcode.CONTINUATION, b"lo")
        == HELLO_FRAGMENTS
    )
    assert encode_frame(Opcode.PING, b"Hello") == PING_HELLO
    assert encode_frame(Opcode.PONG, b"Hello", mask_key=KEY) == PONG_HELLO_MASKED
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == BINARY_256_HEADER
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == BINARY_64K_HEADER


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**63 - 1, b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_encode_header_uses_the_shortest_length_encoding(length: int, expected: bytes) -> None:
    assert encode_header(Opcode.BINARY, length) == expected


def test_encode_header_sets_fin_rsv_and_mask_bits() -> None:
    assert encode_header(Opcode.TEXT, 3, fin=False) == b"\x01\x03"
    assert encode_header(Opcode.TEXT, 3, rsv=4) == b"\xc1\x03"
    assert encode_header(Opcode.TEXT, 3, mask_key=KEY) == b"\x81\x83" + KEY
    assert encode_header(Opcode.BINARY, 300, mask_key=KEY) == b"\x82\xfe\x01\x2c" + KEY


# ---------------------------------------------------------------- decode_header on partial input


frame_heads = [
    head[:cut]
    for head in (
        HELLO_UNMASKED,
        HELLO_MASKED,
        BINARY_256_HEADER,
        BINARY_64K_HEADER,
        b"\x82\xfe\x01\x2c" + KEY,
        b"\x82\xff" + (1 << 40).to_bytes(8, "big") + KEY,
        b"\x88\x7e\x00\x7d",
    )
    for cut in range(len(head) + 1)
]


@pytest.mark.parametrize(
    "frame",
    [
        HELLO_UNMASKED,
        HELLO_MASKED,
        BINARY_256_HEADER,
        BINARY_64K_HEADER,
        b"\x82\xff" + bytes(8) + KEY,
    ],
)
def test_decode_header_needs_the_whole_header(frame: bytes) -> None:
    full = decode_header(frame)
    assert full is not None
    for cut in range(full.header_length):
        assert decode_header(frame[:cut]) is None


@given(
    data=st.one_of(
        st.binary(max_size=20),
        st.tuples(st.binary(max_size=3), st.sampled_from(frame_heads)).map(lambda t: t[0] + t[1]),
    ),
    pos=st.integers(0, 4),
)
def test_frame_size_is_header_length_plus_length_and_needs_the_whole_header(
    data: bytes, pos: int
) -> None:
    pos = min(pos, len(data))
    header = decode_header(data, pos)
    expected = -1 if header is None else header.header_length + header.length
    assert frame_size(data, pos) == expected
    assert frame_size(bytearray(data), pos) == frame_size(memoryview(data), pos) == expected


def test_decode_header_reads_at_an_offset() -> None:
    header = decode_header(b"junk" + HELLO_MASKED, 4)
    assert header is not None
    assert (header.length, header.mask_key) == (5, KEY)


def test_decode_header_reports_rsv_bits_and_reserved_opcodes_without_judging() -> None:
    header = decode_header(b"\xf3\x00")
    assert header is not None
    assert (header.fin, header.rsv, header.opcode) == (True, 0b111, 3)


# ---------------------------------------------------------------- check_header: one rule each


def check(
    frame: bytes, *, expect_masked: bool | None = False, **kwargs: object
) -> tuple[int, str] | None:
    header = decode_header(frame)
    assert header is not None
    violation = check_header(header, expect_masked=expect_masked, **kwargs)  # type: ignore[arg-type]
    return None if violation is None else (violation.close_code, violation.message)


def code_of(frame: bytes, **kwargs: object) -> int | None:
    result = check(frame, **kwargs)
    return None if result is None else result[0]


def test_valid_rfc_frames_pass_check_header() -> None:
    for frame in (
        HELLO_UNMASKED,
        HELLO_FRAGMENTS,
        PING_HELLO,
        BINARY_256_HEADER,
        BINARY_64K_HEADER,
    ):
        assert check(frame) is None
    assert check(HELLO_MASKED, expect_masked=True) is None
    assert check(HELLO_MASKED, expect_masked=None) is None
    assert check(HELLO_UNMASKED, expect_masked=None) is None


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
def test_reserved_opcode_is_a_1002_violation(opcode: int) -> None:
    assert code_of(bytes([0x80 | opcode, 0x00])) == 1002


@pytest.mark.parametrize("rsv_bits", [0x40, 0x20, 0x10, 0x70])
def test_rsv_bit_without_extension_is_a_1002_violation(rsv_bits: int) -> None:
    assert code_of(bytes([0x81 | rsv_bits, 0x00])) == 1002


def test_rsv1_is_accepted_when_an_extension_allows_it() -> None:
    assert check(b"\xc1\x00", allowed_rsv=0b100) is None
    assert code_of(b"\xe1\x00", allowed_rsv=0b100) == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frame_over_125_bytes_is_a_1002_violation(opcode: int) -> None:
    assert check(bytes([0x80 | opcode, 125])) is None
    assert code_of(bytes([0x80 | opcode, 0x7E, 0x00, 0x7E])) == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_fragmented_control_frame_is_a_1002_violation(opcode: int) -> None:
    assert code_of(bytes([opcode, 0x00])) == 1002


def test_64_bit_length_with_top_bit_set_is_a_1002_violation() -> None:
    assert code_of(b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00") == 1002
    assert code_of(b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff") == 1002


@pytest.mark.parametrize(
    "frame",
    [
        b"\x82\x7e\x00\x00",  # 0 in 16 bits
        b"\x82\x7e\x00\x7d",  # 125 in 16 bits
        b"\x82\x7f\x00\x00\x00\x00\x00\x00\x00\x05",  # 5 in 64 bits
        b"\x82\x7f\x00\x00\x00\x00\x00\x00\x00\x7e",  # 126 in 64 bits
        b"\x82\x7f\x00\x00\x00\x00\x00\x00\xff\xff",  # 65535 in 64 bits
    ],
)
def test_non_minimal_length_encoding_is_a_1002_violation(frame: bytes) -> None:
    assert code_of(frame) == 1002


def test_minimal_length_encodings_at_the_boundaries_pass() -> None:
    assert check(b"\x82\x7e\x00\x7e") is None
    assert check(b"\x82\x7e\xff\xff") is None
    assert check(b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00") is None


def test_unmasked_frame_is_a_1002_violation_for_a_server() -> None:
    result = check(HELLO_UNMASKED, expect_masked=True)
    assert result is not None
    assert result[0] == 1002
    assert "unmasked" in result[1]


def test_masked_frame_is_a_1002_violation_for_a_client() -> None:
    result = check(HELLO_MASKED, expect_masked=False)
    assert result is not None
    assert result[0] == 1002
    assert "masked" in result[1]


def test_frame_over_max_frame_size_is_a_1009_violation_with_a_readable_message() -> None:
    assert check(BINARY_256_HEADER, max_frame_size=256) is None
    result = check(BINARY_64K_HEADER, max_frame_size=1024)
    assert result is not None
    assert result[0] == 1009
    assert "64 KiB" in result[1]
    assert "max_frame_size=1 KiB" in result[1]


# ---------------------------------------------------------------- FrameParser


def test_frame_parser_waits_for_the_whole_payload() -> None:
    parser = FrameParser(expect_masked=True)
    parser.feed(HELLO_MASKED[:-1])
    assert parser.next_frame() is None
    assert parser.buffered == len(HELLO_MASKED) - 1
    parser.feed(HELLO_MASKED[-1:])
    frame = parser.next_frame()
    assert frame is not None
    assert frame.payload == b"Hello"
    assert parser.next_frame() is None
    assert parser.frames_parsed == 1


@pytest.mark.parametrize(
    "stream",
    [
        HELLO_UNMASKED + HELLO_FRAGMENTS + PING_HELLO,
        BINARY_256_HEADER + bytes(range(256)) + HELLO_UNMASKED,
        BINARY_64K_HEADER + bytes(65536) + PING_HELLO,
    ],
    ids=["7-bit", "16-bit", "64-bit"],
)
def test_frame_parser_gives_the_same_frames_when_fed_one_byte_at_a_time(stream: bytes) -> None:
    expected = parse_all(stream, expect_masked=False)
    parser = FrameParser(expect_masked=False)
    frames = []
    for i in range(len(stream)):
        parser.feed(stream[i : i + 1])
        while (frame := parser.next_frame()) is not None:
            frames.append((frame.fin, frame.opcode, frame.payload))
    assert frames == expected


def test_strict_frame_parser_raises_protocol_error_with_1002() -> None:
    parser = FrameParser(expect_masked=True)
    parser.feed(HELLO_UNMASKED)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame()
    assert info.value.close_code == 1002


def test_strict_frame_parser_raises_payload_too_big_on_the_header_alone() -> None:
    parser = FrameParser(expect_masked=False, max_frame_size=100)
    parser.feed(BINARY_256_HEADER)  # no payload yet
    with pytest.raises(PayloadTooBig) as info:
        parser.next_frame()
    assert info.value.close_code == 1009


def test_observer_frame_parser_records_violations_and_keeps_going() -> None:
    parser = FrameParser(expect_masked=None, strict=False)
    parser.feed(HELLO_MASKED + b"\x83\x00" + HELLO_UNMASKED)
    frames = [parser.next_frame(), parser.next_frame(), parser.next_frame()]
    assert [f.opcode for f in frames if f is not None] == [1, 3, 1]
    assert [(index, v.close_code) for index, v in parser.violations] == [(1, 1002)]


# ---------------------------------------------------------------- masking


def test_apply_mask_matches_the_rfc_example() -> None:
    assert apply_mask(b"Hello", KEY) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(bytes.fromhex("7f9f4d5158"), KEY) == b"Hello"


def test_apply_mask_of_nothing_is_nothing() -> None:
    assert apply_mask(b"", KEY) == b""
    assert apply_mask(b"", KEY, 3) == b""


def test_apply_mask_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(37))
    assert apply_mask(bytearray(data), KEY) == xor(data)
    assert apply_mask(memoryview(data)[5:], KEY, 5) == xor(data)[5:]


@FAST
@given(
    data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4), offset=st.integers(0, 99)
)
def test_apply_mask_matches_a_per_byte_xor(data: bytes, key: bytes, offset: int) -> None:
    assert apply_mask(data, key, offset) == xor(data, key, offset)


@FAST
@given(
    data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4), offset=st.integers(0, 99)
)
def test_apply_mask_twice_is_the_identity(data: bytes, key: bytes, offset: int) -> None:
    assert apply_mask(apply_mask(data, key, offset), key, offset) == data


@FAST
@given(data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4), cut=st.integers(0, 300))
def test_apply_mask_in_two_pieces_with_offset_equals_one_piece(
    data: bytes, key: bytes, cut: int
) -> None:
    cut = min(cut, len(data))
    assert apply_mask(data[:cut], key) + apply_mask(data[cut:], key, cut) == apply_mask(data, key)


def test_mask_keys_are_four_bytes_and_fresh() -> None:
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(2000)]  # crosses a refill of the pool
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) > 1990


# A client sends a frame, forks, and parent and child each send four more: their masking keys.
FORKED_KEYS = """
import os
from upwire.protocol.connection import Connection, Role

def keys(count):
    client = Connection(Role.CLIENT)
    for _ in range(count):
        client.send_message(b"x", False)
    return [frame[2:6].hex() for frame in client.data_to_send()]

keys(1)
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.write(write, " ".join(keys(4)).encode())
    os._exit(0)
os.waitpid(child, 0)
print(os.read(read, 1000).decode())
print(" ".join(keys(4)))
"""


def test_a_forked_child_masks_with_keys_of_its_own() -> None:
    # RFC 6455 §5.3: a peer that saw one process's frames must not be able to predict another's keys.
    result = subprocess.run(
        [sys.executable, "-c", FORKED_KEYS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    child, parent = (line.split() for line in result.stdout.splitlines())
    assert len(child) == len(parent) == 4
    assert not set(child) & set(parent), (child, parent)


# ---------------------------------------------------------------- encoder and decoders agree

frame_specs = st.tuples(
    st.sampled_from([Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY]),
    st.booleans(),
    st.one_of(st.binary(max_size=200), st.integers(0, 70000).map(lambda n: b"\x5a" * n)),
    st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
)


@FAST
@given(spec=frame_specs)
def test_decode_header_agrees_with_encode_frame(
    spec: tuple[int, bool, bytes, bytes | None],
) -> None:
    opcode, fin, payload, key = spec
    frame = encode_frame(opcode, payload, fin=fin, mask_key=key)
    header = decode_header(frame)
    assert header is not None
    assert (header.opcode, header.fin, header.rsv, header.length) == (opcode, fin, 0, len(payload))
    assert header.mask_key == key
    assert header.header_length + len(payload) == len(frame)
    assert check_header(header, expect_masked=key is not None) is None
    body = frame[header.header_length :]
    assert (apply_mask(body, key) if key else body) == payload


@FAST
@given(specs=st.lists(frame_specs, max_size=6), data=st.data())
def test_frame_parser_agrees_with_encode_frame_over_any_split(
    specs: list[tuple[int, bool, bytes, bytes | None]], data: st.DataObject
) -> None:
    key = data.draw(st.binary(min_size=4, max_size=4))
    stream = b"".join(encode_frame(op, p, fin=fin, mask_key=key) for op, fin, p, _ in specs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    parser = FrameParser(expect_masked=True)
    frames = []
    for chunk in split_at(stream, cuts):
        parser.feed(chunk)
        while (frame := parser.next_frame()) is not None:
            frames.append((frame.opcode, frame.fin, frame.payload))
    assert frames == [(op, fin, p) for op, fin, p, _ in specs]
    assert parser.buffered == 0
