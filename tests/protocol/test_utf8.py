"""Tests of `upwire.protocol.utf8`: UTF-8 validation that fails at the first byte that cannot be valid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.protocol.utf8 import IncrementalUTF8Decoder

from .wire import split_at

FAST = settings(max_examples=200, deadline=None)


def decode_pieces(pieces: list[bytes]) -> str:
    decoder = IncrementalUTF8Decoder()
    text = "".join(decoder.decode(piece) for piece in pieces)
    return text + decoder.decode(b"", final=True)


def first_failing_byte(data: bytes) -> int | None:
    """Feed `data` one byte at a time; return the index of the byte that raised, or None."""
    decoder = IncrementalUTF8Decoder()
    for i in range(len(data)):
        try:
            decoder.decode(data[i : i + 1])
        except UnicodeDecodeError:
            return i
    return None


def test_ascii_and_multi_byte_text_decode() -> None:
    assert decode_pieces([b"Hello"]) == "Hello"
    assert decode_pieces(["κόσμε €🎉".encode()]) == "κόσμε €🎉"


@pytest.mark.parametrize("char", ["é", "€", "🎉", "\ud7ff", "\ue000", "\U0010ffff"])
def test_a_character_split_at_every_byte_boundary_decodes(char: str) -> None:
    encoded = char.encode()
    for cut in range(len(encoded) + 1):
        assert decode_pieces([encoded[:cut], encoded[cut:]]) == char


def test_a_character_fed_one_byte_at_a_time_decodes() -> None:
    encoded = "a€🎉z".encode()
    assert decode_pieces([encoded[i : i + 1] for i in range(len(encoded))]) == "a€🎉z"


@pytest.mark.parametrize(
    ("data", "index"),
    [
        (b"abc\xff", 3),  # never valid
        (b"\x80", 0),  # a continuation byte with no start
        (b"\xc0\x80", 0),  # C0 and C1 only start overlong encodings
        (b"\xe0\x80", 1),  # overlong 3-byte
        (b"\xf0\x8f", 1),  # overlong 4-byte
        (b"\xf4\x90", 1),  # above U+10FFFF
        (b"\xf5", 0),  # above U+10FFFF
        (b"\xce\x41", 1),  # a start byte followed by ASCII
        (b"\xed\xa0", 1),  # UTF-16 surrogate: ED A0..BF can never be completed
        (b"\xed\xbf", 1),
        ("κόσμε".encode() + b"\xed\xa0\x80edited", 11),
    ],
)
def test_invalid_bytes_fail_at_the_first_byte_that_cannot_be_valid(data: bytes, index: int) -> None:
    assert first_failing_byte(data) == index


def test_ed_9f_is_the_valid_prefix_of_u_d7ff() -> None:
    decoder = IncrementalUTF8Decoder()
    assert decoder.decode(b"\xed\x9f") == ""
    assert decoder.decode(b"\xbf", final=True) == "\ud7ff"


def test_surrogate_prefix_fails_on_its_own_without_waiting_for_more() -> None:
    with pytest.raises(UnicodeDecodeError):
        IncrementalUTF8Decoder().decode(b"ok\xed\xa0")


def test_an_incomplete_character_is_only_an_error_at_the_end() -> None:
    decoder = IncrementalUTF8Decoder()
    assert decoder.decode(b"a\xe2\x82") == "a"
    with pytest.raises(UnicodeDecodeError):
        decoder.decode(b"", final=True)


@FAST
@given(text=st.text(max_size=100), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_valid_text_split_anywhere_decodes_to_itself(text: str, cuts: list[int]) -> None:
    encoded = text.encode()
    pieces = split_at(encoded, [min(c, len(encoded)) for c in cuts])
    assert decode_pieces(pieces) == text


def is_valid_prefix(data: bytes) -> bool:
    """Reference: `data` can be completed into valid UTF-8 (Python's one-shot decoder says so)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"
    return True


@FAST
@given(
    data=st.one_of(st.binary(max_size=40), st.text(max_size=10).map(str.encode)),
    junk=st.binary(max_size=3),
)
def test_failure_is_reported_at_the_earliest_impossible_byte(data: bytes, junk: bytes) -> None:
    data += junk
    expected = next((i for i in range(len(data)) if not is_valid_prefix(data[: i + 1])), None)
    assert first_failing_byte(data) == expected


def failure_reason(pieces: list[bytes]) -> str | None:
    try:
        decode_pieces(pieces)
    except UnicodeDecodeError as exc:
        return exc.reason
    return None


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=40),
        st.text(max_size=10).map(lambda text: text.encode() + b"\xed\xa0\x80"),
    ),
    cuts=st.lists(st.integers(0, 50), max_size=6),
)
def test_the_reason_of_a_failure_does_not_depend_on_how_the_bytes_were_split(
    data: bytes, cuts: list[int]
) -> None:
    # The reason goes into the close frame: it must be the same whatever the TCP segments were.
    pieces = split_at(data, [min(c, len(data)) for c in cuts])
    assert failure_reason(pieces) == failure_reason([data])


def test_a_surrogate_fails_with_the_same_reason_whole_and_split() -> None:
    assert failure_reason([b"\xed\xa0\x80"]) == "invalid continuation byte"
    assert failure_reason([b"\xed\xa0", b"\x80"]) == "invalid continuation byte"
