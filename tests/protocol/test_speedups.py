"""The C extension `upwire._speedups` and its pure-Python twins give identical results."""

from __future__ import annotations

import importlib
import itertools
import mmap
import os
import subprocess
import sys
from base64 import b64encode
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.protocol import connection as core
from upwire.protocol import frames, handshake, request_head, simple_frames
from upwire.protocol.connection import Connection, Role

# The differential tests below take UPWIRE_FUZZ_FACTOR times their usual number of examples: a fuzzing
# budget of its own, e.g. `UPWIRE_FUZZ_FACTOR=100 .venv/bin/python -m pytest tests/protocol/test_speedups.py`.
FUZZ = int(os.environ.get("UPWIRE_FUZZ_FACTOR", "1"))


def test_the_c_extension_is_built_and_used() -> None:
    # `pip install -e .` builds it; a missing compiler would leave only the Python twin.
    speedups = importlib.import_module("upwire._speedups")
    assert frames.apply_mask is speedups.apply_mask
    assert frames.alloc_buffer is speedups.alloc_buffer
    assert frames.mask_in_place is speedups.mask_in_place
    assert frames.payload_buffer is speedups.payload_buffer
    assert frames.encode_frame is speedups.encode_frame
    assert simple_frames.take_simple_frames is speedups.take_simple_frames
    assert handshake.accept_key is speedups.accept_key
    assert request_head.read_common_head is speedups.read_common_head


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    mask_key=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=0, max_value=1 << 40),
)
def test_c_and_python_masking_agree_on_random_input(
    data: bytes, mask_key: bytes, offset: int
) -> None:
    from upwire._speedups import apply_mask as apply_mask_c

    expected = bytes(b ^ mask_key[(i + offset) % 4] for i, b in enumerate(data))
    assert frames.apply_mask_py(data, mask_key, offset) == expected
    assert apply_mask_c(data, mask_key, offset) == expected
    assert apply_mask_c(memoryview(data), mask_key, offset) == expected
    assert apply_mask_c(bytearray(data), mask_key, offset) == expected


def test_c_masking_handles_a_large_payload_at_every_alignment() -> None:
    # 64 bytes at a time (vector registers), then 8, then single bytes: every split of those, at every
    # alignment of the buffer and every place in the key, copied or in place.
    from upwire._speedups import apply_mask as apply_mask_c
    from upwire._speedups import mask_in_place as mask_in_place_c

    data = os.urandom((1 << 20) + 7)
    for start in range(8):
        view = memoryview(data)[start:]
        expected = frames.apply_mask_py(view, b"\x01\x02\x03\x04", start)
        assert apply_mask_c(view, b"\x01\x02\x03\x04", start) == expected
        buffer = bytearray(data)
        mask_in_place_c(memoryview(buffer)[start:], b"\x01\x02\x03\x04", start)
        assert buffer[:start] == data[:start] and buffer[start:] == expected


def test_c_masking_rejects_a_key_that_is_not_4_bytes() -> None:
    from upwire._speedups import apply_mask as apply_mask_c

    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask_c(b"data", b"abc")


@settings(max_examples=300 * FUZZ, deadline=None)
@given(
    key=st.text(max_size=200)
    | st.binary(min_size=16, max_size=16).map(lambda b: b64encode(b).decode())
)
def test_c_and_python_accept_keys_agree(key: str) -> None:
    from upwire._speedups import accept_key as accept_key_c

    try:
        expected: object = handshake.accept_key_py(key)
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    try:
        got: object = accept_key_c(key)
    except UnicodeEncodeError:
        got = UnicodeEncodeError
    assert got == expected


def test_the_c_accept_key_is_rfc_6455s_and_refuses_bytes() -> None:
    from upwire._speedups import accept_key as accept_key_c

    # RFC 6455 §1.3's example; keys of every length around SHA-1's 64-byte blocks (with the GUID's 36).
    assert accept_key_c("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    for size in range(0, 200):
        assert accept_key_c("k" * size) == handshake.accept_key_py("k" * size)
    with pytest.raises(TypeError):
        accept_key_c(b"dGhlIHNhbXBsZSBub25jZQ==")  # type: ignore[arg-type]


def test_upwire_no_speedups_selects_the_python_twin() -> None:
    code = (
        "from upwire.protocol import frames, simple_frames as s; "
        "print(frames.apply_mask is frames.apply_mask_py and frames.alloc_buffer is frames.alloc_buffer_py"
        " and frames.mask_in_place is frames.mask_in_place_py"
        " and frames.payload_buffer is frames.payload_buffer_py"
        " and frames.encode_frame is frames.encode_frame_py"
        " and s.take_simple_frames is s.take_simple_frames_py); "
        "from upwire.protocol import handshake as h, request_head as r; "
        "print(h.accept_key is h.accept_key_py and r.read_common_head is r.read_common_head_py)"
    )
    env = {**os.environ, "UPWIRE_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=0, max_value=1 << 20), data=st.binary(max_size=64))
def test_c_and_python_buffers_have_the_size_asked_and_keep_what_is_written(
    size: int, data: bytes
) -> None:
    from upwire._speedups import alloc_buffer as alloc_buffer_c

    for alloc in (alloc_buffer_c, frames.alloc_buffer_py):
        buffer = alloc(size)
        assert type(buffer) is bytearray
        assert len(buffer) == size
        piece = data[:size]
        buffer[: len(piece)] = piece
        assert buffer[: len(piece)] == piece
        buffer += b"more"  # an ordinary, resizable bytearray
        assert len(buffer) == size + 4


def test_c_and_python_buffers_refuse_a_negative_size() -> None:
    from upwire._speedups import alloc_buffer as alloc_buffer_c

    for alloc in (alloc_buffer_c, frames.alloc_buffer_py):
        with pytest.raises(ValueError):
            alloc(-1)


@settings(max_examples=300 * FUZZ, deadline=None)
@given(
    data=st.binary(max_size=300),
    mask_key=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=0, max_value=1 << 40),
    start=st.integers(min_value=0, max_value=9),
)
def test_c_and_python_masking_in_place_agree_with_apply_mask(
    data: bytes, mask_key: bytes, offset: int, start: int
) -> None:
    from upwire._speedups import mask_in_place as mask_in_place_c

    expected = data[:start] + frames.apply_mask_py(data[start:], mask_key, offset)
    for mask_in_place in (mask_in_place_c, frames.mask_in_place_py):
        buffer = bytearray(data)
        assert mask_in_place(memoryview(buffer)[start:], mask_key, offset) is None
        assert buffer == expected


def test_c_and_python_masking_in_place_refuse_what_cannot_be_written_and_bad_keys() -> None:
    from upwire._speedups import mask_in_place as mask_in_place_c

    for mask_in_place in (mask_in_place_c, frames.mask_in_place_py):
        with pytest.raises(TypeError):
            mask_in_place(b"read-only", b"abcd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4 bytes"):
        mask_in_place_c(bytearray(b"data"), b"abc")


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=1, max_value=1 << 20), data=st.binary(min_size=1, max_size=64))
def test_c_and_python_payload_buffers_deliver_what_their_view_wrote(size: int, data: bytes) -> None:
    from upwire._speedups import payload_buffer as payload_buffer_c

    piece = (data * (size // len(data) + 1))[:size]
    for payload_buffer, kind in ((payload_buffer_c, bytes), (frames.payload_buffer_py, mmap.mmap)):
        buffer, view = payload_buffer(size)
        assert type(buffer) is kind and len(buffer) == size
        assert not view.readonly and len(view) == size and view.format == "B"
        view[:] = piece
        assert bytes(buffer) == piece
        del view  # the C buffer outlives its view, and each view keeps its storage alive
    buffer, view = payload_buffer_c(size)
    del buffer
    view[:] = piece
    assert view.tobytes() == piece


def test_c_and_python_payload_buffers_refuse_sizes_below_one() -> None:
    from upwire._speedups import payload_buffer as payload_buffer_c

    for payload_buffer in (payload_buffer_c, frames.payload_buffer_py):
        for size in (0, -1):
            with pytest.raises(ValueError):
                payload_buffer(size)


# Lengths around the 7-, 16- and 64-bit encodings, and any other.
FRAME_SIZES = st.one_of(
    st.sampled_from([0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 70_000]),
    st.integers(min_value=0, max_value=3000),
)


@settings(max_examples=300 * FUZZ, deadline=None)
@given(
    opcode=st.integers(min_value=0, max_value=15),
    size=FRAME_SIZES,
    seed=st.binary(min_size=1, max_size=16),
    fin=st.booleans(),
    rsv=st.integers(min_value=0, max_value=7),
    mask_key=st.none() | st.binary(min_size=4, max_size=4),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_c_and_python_frames_agree_and_decode_back(
    opcode: int,
    size: int,
    seed: bytes,
    fin: bool,
    rsv: int,
    mask_key: bytes | None,
    kind: type,
) -> None:
    from upwire._speedups import encode_frame as encode_frame_c

    payload = (seed * (size // len(seed) + 1))[:size]
    data = kind(payload)
    expected = frames.encode_frame_py(opcode, data, fin, rsv, mask_key)
    assert encode_frame_c(opcode, data, fin, rsv, mask_key) == expected
    assert encode_frame_c(opcode, data, fin=fin, rsv=rsv, mask_key=mask_key) == expected
    # And the frame reads back as what was encoded (decode_header is independent of both).
    header = frames.decode_header(expected)
    assert header is not None
    assert (header.fin, header.rsv, header.opcode, header.length) == (fin, rsv, opcode, size)
    body = expected[header.header_length :]
    if mask_key is None:
        assert header.mask_key is None and body == payload
    else:
        assert header.mask_key == mask_key and frames.apply_mask_py(body, mask_key) == payload


@pytest.mark.parametrize("size", [0, 8, 120, 2000, 70000])
@pytest.mark.parametrize("item", ["i", "Q"])
def test_c_and_python_frame_and_mask_a_memoryview_of_wider_items_by_its_bytes(
    size: int, item: str
) -> None:
    """`len` of a view of ints counts ints: both twins must size and mask the view's bytes."""
    from upwire._speedups import apply_mask as apply_mask_c
    from upwire._speedups import encode_frame as encode_frame_c

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    view = memoryview(payload).cast(item)
    for mask_key in (None, b"\x01\x02\x03\x04"):
        expected = frames.encode_frame_py(2, payload, True, 0, mask_key)
        assert frames.encode_frame_py(2, view, True, 0, mask_key) == expected
        assert encode_frame_c(2, view, True, 0, mask_key) == expected
    masked = frames.apply_mask_py(payload, b"abcd", 1)
    assert frames.apply_mask_py(view, b"abcd", 1) == masked == apply_mask_c(view, b"abcd", 1)


def test_c_and_python_frames_refuse_the_same_bad_arguments() -> None:
    from upwire._speedups import encode_frame as encode_frame_c

    for encode in (encode_frame_c, frames.encode_frame_py):
        with pytest.raises(ValueError, match="opcode"):
            encode(16, b"x")
        with pytest.raises(ValueError, match="rsv"):
            encode(1, b"x", True, 8)
        for huge in (1 << 40, -(1 << 70)):  # beyond a C int: the same ValueError, positional or not
            with pytest.raises(ValueError, match="opcode"):
                encode(huge, b"x")
            with pytest.raises(ValueError, match="rsv"):
                encode(1, b"x", rsv=huge)
        with pytest.raises(ValueError, match="4 bytes"):
            encode(1, b"x", True, 0, b"abc")
        with pytest.raises(TypeError):
            encode(1, "text is encoded by the caller")  # type: ignore[arg-type]
        # The C version takes positional arguments on a path of its own: both paths check the same.
        with pytest.raises(TypeError):
            encode(1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            encode(1, b"x", True, 0, None, 5)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            encode(1, b"x", size=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            encode("1", b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            encode(1, b"x", True, "0")  # type: ignore[arg-type]
        assert encode(1, b"x", 0) == encode(
            1, b"x", fin=False
        )  # fin by truth value, positional or not
    # A refused key is let go: releasing a view still exported would raise BufferError.
    for key in (memoryview(b"abc"), memoryview(b"")):
        with pytest.raises(ValueError, match="4 bytes"):
            encode_frame_c(1, b"x", True, 0, key)  # type: ignore[arg-type]
        key.release()


# Frames for the receive fast path: simple ones (whole messages), and every kind it must leave alone.
def _frame(
    b0: int, payload: bytes, mask_key: bytes | None, length_bits: int | None = None
) -> bytes:
    """A frame with first byte `b0`; `length_bits` forces a (possibly not minimal) length encoding."""
    n = len(payload)
    bits = max(length_bits or 7, 7 if n < 126 else 16 if n < 65536 else 64)
    mask_bit = 0x80 if mask_key is not None else 0
    if bits == 7:
        head = bytes((b0, mask_bit | n))
    elif bits == 16:
        head = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    if mask_key is None:
        return head + payload
    return head + mask_key + frames.apply_mask_py(payload, mask_key)


TEXTS = st.sampled_from(["", "a", "héllo", "€" * 50, "𝄞" * 40, "x" * 300]).map(str.encode)
PAYLOADS = st.one_of(
    TEXTS,
    st.binary(max_size=300),
    # not UTF-8; 64-bit length; close payloads: none, valid codes (with a reason), 1 byte
    st.sampled_from(
        [
            b"\xff",
            b"\xed\xa0\x80",
            b"ok\xc3",
            bytes(70_000),
            b"",
            b"\x03\xe8",
            b"\x0f\xa0bye",
            b"\x03",
        ]
    ),
)
FRAME_KINDS = st.tuples(
    st.sampled_from([0x81, 0x82, 0x81, 0x82, 0x01, 0x02, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0x83, 0x8F]),
    PAYLOADS,
    st.sampled_from([None, None, 16, 64]),  # forced encodings are not minimal for short payloads
    st.booleans(),  # masked as the role expects, or the other way
)


@settings(max_examples=500 * FUZZ, deadline=None)
@given(
    kinds=st.lists(FRAME_KINDS, max_size=6),
    garbage=st.binary(max_size=20),
    masked=st.booleans(),
    mask_key=st.binary(min_size=4, max_size=4),
    limit=st.sampled_from([0, 1, 125, 126, 300, 65536, 1 << 20, 1 << 62, 1 << 63, 1 << 80]),
    cut=st.integers(min_value=0, max_value=80_000),
    skip=st.integers(min_value=0, max_value=3),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_c_and_python_simple_frame_runs_agree(
    kinds: list[tuple[int, bytes, int | None, bool]],
    garbage: bytes,
    masked: bool,
    mask_key: bytes,
    limit: int,
    cut: int,
    skip: int,
    kind: type,
) -> None:
    from upwire._speedups import take_simple_frames as take_c
    from upwire.protocol.simple_frames import take_simple_frames_py as take_py

    encoded = [
        _frame(
            b0, payload, mask_key if as_expected == masked else (None if masked else mask_key), bits
        )
        for b0, payload, bits, as_expected in kinds
    ]
    whole = b"".join(encoded) + garbage
    data = whole[: min(cut, len(whole))] if cut < len(whole) else whole
    # Start at a frame boundary (as the parser does), or anywhere.
    pos = min(sum(len(f) for f in encoded[:skip]), len(data)) if skip < 3 else min(skip, len(data))
    events_c: list[object] = ["before"]
    events_py: list[object] = ["before"]
    end_c = take_c(kind(data), pos, masked, limit, events_c)  # type: ignore[arg-type]
    end_py = take_py(kind(data), pos, masked, limit, events_py)  # type: ignore[arg-type]
    assert (end_c, events_c) == (end_py, events_py)
    assert pos <= end_c <= len(data)


def test_a_simple_frame_run_takes_whole_messages_and_stops_at_the_first_other_frame() -> None:
    from upwire._speedups import take_simple_frames as take_c
    from upwire.protocol.simple_frames import take_simple_frames_py as take_py

    key = b"\x01\x02\x03\x04"
    simple = [
        _frame(0x81, "héllo".encode(), key),
        _frame(0x82, bytes(range(200)), key),
        _frame(0x82, bytes(70_000), key),
        _frame(0x81, b"", key),
    ]
    expected = ["héllo", bytes(range(200)), bytes(70_000), ""]
    stoppers = [
        _frame(0x01, b"fragment", key),  # FIN clear
        _frame(0xC1, b"compressed", key),  # RSV1
        _frame(0x89, b"ping", key),  # control
        _frame(0x81, b"\xce\xbb\xff", key),  # not UTF-8
        _frame(0x82, b"short", key, length_bits=16),  # not the minimal length
        _frame(0x82, b"unmasked", None),  # wrong MASK bit for a server
        _frame(0x82, bytes(70_001), key),  # over the limit
    ]
    run = b"".join(simple)
    for take in (take_c, take_py):
        for stopper in stoppers:
            events: list[object] = []
            data = run + stopper + simple[0]
            assert take(data, 0, True, 70_000, events) == len(run)  # type: ignore[arg-type]
            assert events == expected
        events = []
        incomplete = run + _frame(0x82, b"cut short", key)[:-1]
        assert take(incomplete, 0, True, 70_000, events) == len(run)  # type: ignore[arg-type]
        assert events == expected
        events = []
        assert take(run, 0, True, 1 << 63, events) == len(run)  # type: ignore[arg-type]
        assert events == expected
        # A client expects unmasked frames.
        events = []
        unmasked = _frame(0x81, b"hi", None) + _frame(0x82, b"\x00", None)
        assert take(unmasked, 0, False, 125, events) == len(unmasked)  # type: ignore[arg-type]
        assert events == ["hi", b"\x00"]
        for bad in ((run, -1, True, 10), (run, len(run) + 1, True, 10), (run, 0, True, -1)):
            with pytest.raises(ValueError):
                take(*bad, [])  # type: ignore[arg-type]


@settings(max_examples=200 * FUZZ, deadline=None)
@given(
    kinds=st.lists(FRAME_KINDS, max_size=8),
    garbage=st.binary(max_size=12),
    role=st.sampled_from([Role.SERVER, Role.CLIENT]),
    mask_key=st.binary(min_size=4, max_size=4),
    limit=st.sampled_from([None, 0, 125, 300, 70_000]),
    cuts=st.lists(st.integers(min_value=0, max_value=80_000), max_size=4),
)
def test_the_core_answers_alike_with_the_c_fast_path_its_twin_and_no_fast_paths(
    kinds: list[tuple[int, bytes, int | None, bool]],
    garbage: bytes,
    role: Role,
    mask_key: bytes,
    limit: int | None,
    cuts: list[int],
) -> None:
    # The whole receive path, not just the function: the same stream, cut into the same pieces, gives the
    # same events, the same bytes to send (close codes) and the same end state either way; and the same
    # as the reference alone (`_parse_frame` for every frame: no simple-frame or control-frame fast path).
    from upwire._speedups import take_simple_frames as take_c
    from upwire.protocol.simple_frames import take_simple_frames_py as take_py

    server = role is Role.SERVER
    stream = b"".join(
        _frame(b0, payload, mask_key if as_expected == server else None, bits)
        for b0, payload, bits, as_expected in kinds
    )
    stream += garbage
    bounds = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]

    def no_frames(view: object, pos: int, *args: object) -> int:
        return pos

    def run(take: object, control_fast_path: bool = True) -> tuple[object, ...]:
        with (
            mock.patch.object(core, "take_simple_frames", take),
            mock.patch.object(
                Connection,
                "_take_control_frame",
                Connection._take_control_frame if control_fast_path else lambda *args: -1,
            ),
        ):
            conn = Connection(role, max_message_size=limit)
            events: list[object] = []
            for piece in pieces:
                events += conn.receive_data(piece)
                while conn.input_pending:
                    events += conn.receive_data(b"")
            # What it sent, unmasked: a client masks each frame with a fresh key.
            sent = frames.FrameParser(expect_masked=None, strict=False)
            sent.feed(b"".join(conn.data_to_send()))
            answers = []
            while (frame := sent.next_frame()) is not None:
                answers.append((frame.header.fin, frame.header.opcode, frame.payload))
            return events, answers, sent.buffered, conn.state, conn.close_code

    assert run(take_c) == run(take_py) == run(no_frames, control_fast_path=False)
