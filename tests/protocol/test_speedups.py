"""The C extension `upwire._speedups` and its pure-Python twins give identical results."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.protocol import frames


def test_the_c_extension_is_built_and_used() -> None:
    # `pip install -e .` builds it; a missing compiler would leave only the Python twin.
    speedups = importlib.import_module("upwire._speedups")
    assert frames.apply_mask is speedups.apply_mask
    assert frames.alloc_buffer is speedups.alloc_buffer
    assert frames.encode_frame is speedups.encode_frame


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
    from upwire._speedups import apply_mask as apply_mask_c

    data = os.urandom((1 << 20) + 7)
    for start in range(8):
        view = memoryview(data)[start:]
        assert apply_mask_c(view, b"\x01\x02\x03\x04", start) == frames.apply_mask_py(
            view, b"\x01\x02\x03\x04", start
        )


def test_c_masking_rejects_a_key_that_is_not_4_bytes() -> None:
    from upwire._speedups import apply_mask as apply_mask_c

    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask_c(b"data", b"abc")


def test_upwire_no_speedups_selects_the_python_twin() -> None:
    code = (
        "from upwire.protocol import frames; "
        "print(frames.apply_mask is frames.apply_mask_py and frames.alloc_buffer is frames.alloc_buffer_py"
        " and frames.encode_frame is frames.encode_frame_py)"
    )
    env = {**os.environ, "UPWIRE_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


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


# Lengths around the 7-, 16- and 64-bit encodings, and any other.
FRAME_SIZES = st.one_of(
    st.sampled_from([0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 70_000]),
    st.integers(min_value=0, max_value=3000),
)


@settings(max_examples=300, deadline=None)
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


def test_c_and_python_frames_refuse_the_same_bad_arguments() -> None:
    from upwire._speedups import encode_frame as encode_frame_c

    for encode in (encode_frame_c, frames.encode_frame_py):
        with pytest.raises(ValueError, match="opcode"):
            encode(16, b"x")
        with pytest.raises(ValueError, match="rsv"):
            encode(1, b"x", True, 8)
        with pytest.raises(ValueError, match="4 bytes"):
            encode(1, b"x", True, 0, b"abc")
        with pytest.raises(TypeError):
            encode(1, "text is encoded by the caller")  # type: ignore[arg-type]
    # A refused key is let go: releasing a view still exported would raise BufferError.
    for key in (memoryview(b"abc"), memoryview(b"")):
        with pytest.raises(ValueError, match="4 bytes"):
            encode_frame_c(1, b"x", True, 0, key)  # type: ignore[arg-type]
        key.release()
