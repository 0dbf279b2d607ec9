"""Tests of `upwire.protocol.close`: which close codes may be on the wire, and close payloads as bytes."""

from __future__ import annotations

import pytest

from upwire.exceptions import ProtocolError, UsageError
from upwire.protocol import Connection, Role
from upwire.protocol.close import (
    CloseCode,
    ClosePayload,
    build_close_payload,
    is_valid_close_code,
    parse_close_payload,
)

INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]


def reference_is_valid(code: int) -> bool:
    # RFC 6455 §7.4.1-§7.4.2 and the IANA registry (1012-1014 registered later).
    return code in {1000, 1001, 1002, 1003, *range(1007, 1015)} or 3000 <= code <= 4999


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_is_rejected(code: int) -> None:
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_accepted(code: int) -> None:
    assert is_valid_close_code(code)


def test_every_two_byte_close_code_is_judged_like_the_reference() -> None:
    wrong = [c for c in range(65536) if is_valid_close_code(c) != reference_is_valid(c)]
    assert wrong == []


def test_close_code_enum_matches_rfc_6455_section_7_4_1() -> None:
    assert CloseCode.NORMAL_CLOSURE == 1000
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.PROTOCOL_ERROR == 1002
    assert CloseCode.UNSUPPORTED_DATA == 1003
    assert CloseCode.NO_STATUS_RECEIVED == 1005
    assert CloseCode.ABNORMAL_CLOSURE == 1006
    assert CloseCode.INVALID_PAYLOAD_DATA == 1007
    assert CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.MANDATORY_EXTENSION == 1010
    assert CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.TLS_HANDSHAKE == 1015
    for never_on_the_wire in (1005, 1006, 1015):
        assert not is_valid_close_code(CloseCode(never_on_the_wire))


def test_empty_payload_parses_as_no_code() -> None:
    assert parse_close_payload(b"") == ClosePayload(None, "")


def test_code_and_reason_parse_from_bytes() -> None:
    assert parse_close_payload(b"\x03\xe8") == ClosePayload(1000, "")
    assert parse_close_payload(b"\x0f\xa0bye \xe2\x9c\x93") == ClosePayload(4000, "bye ✓")


def test_one_byte_payload_is_a_1002_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(b"\x03")
    assert info.value.close_code == 1002


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_code_in_a_payload_is_a_1002_error(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(code.to_bytes(2, "big") + b"why")
    assert info.value.close_code == 1002
    assert str(code) in str(info.value)


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xce", b"\xed\xa0\x80", b"\xc0\x80"])
def test_reason_that_is_not_utf8_is_a_1007_error(reason: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(b"\x03\xe8" + reason)
    assert info.value.close_code == 1007


def test_build_close_payload_writes_code_then_utf8_reason() -> None:
    assert build_close_payload(1000) == b"\x03\xe8"
    assert build_close_payload(4999, "é") == b"\x13\x87\xc3\xa9"
    assert build_close_payload(None) == b""


@pytest.mark.parametrize(
    ("code", "reason"), [("1000", ""), (1000.0, ""), (True, ""), (1000, b"bye"), (None, b"")]
)
def test_build_close_payload_refuses_values_of_the_wrong_type_by_name(
    code: object, reason: object
) -> None:
    # close(1000, b"bye") raised AttributeError ('bytes' object has no attribute 'encode'), and
    # close("1000") a TypeError about '<='.
    with pytest.raises(TypeError, match=r"close (code|reason) must be"):
        build_close_payload(code, reason)  # type: ignore[arg-type]


def test_build_close_payload_takes_no_reason_as_none() -> None:
    assert build_close_payload(None, None) == b""  # type: ignore[arg-type]
    assert build_close_payload(1000, None) == b"\x03\xe8"  # type: ignore[arg-type]


def test_a_close_sent_with_reason_none_is_kept_with_an_empty_reason() -> None:
    # The state says what the frame says: "" (a None kept there reached ConnectionClosed.sent and
    # close_reason, typed str).
    connection = Connection(Role.CLIENT)
    connection.send_close(1011, None, failing=True)  # type: ignore[arg-type]
    assert connection.close_sent == (1011, "")
    assert (connection.close_code, connection.close_reason) == (1011, "")


def test_build_close_payload_accepts_a_123_byte_reason_and_refuses_124() -> None:
    assert len(build_close_payload(1000, "x" * 123)) == 125
    with pytest.raises(UsageError):
        build_close_payload(1000, "x" * 124)
    with pytest.raises(UsageError):
        build_close_payload(1000, "é" * 62)  # 124 bytes once encoded


@pytest.mark.parametrize("code", INVALID_CODES)
def test_build_close_payload_refuses_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(UsageError):
        build_close_payload(code)


def test_a_reason_without_a_code_is_refused() -> None:
    with pytest.raises(UsageError):
        build_close_payload(None, "why")


@pytest.mark.parametrize("code", VALID_CODES)
def test_build_then_parse_round_trips(code: int) -> None:
    assert parse_close_payload(build_close_payload(code, "κόσμε")) == ClosePayload(code, "κόσμε")


def test_build_close_payload_refuses_a_reason_utf8_cannot_encode() -> None:
    with pytest.raises(UsageError, match="cannot be encoded as UTF-8"):
        build_close_payload(1000, "lone \ud800 surrogate")
