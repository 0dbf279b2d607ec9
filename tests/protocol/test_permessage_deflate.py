"""Byte-level tests of permessage-deflate (RFC 7692): header grammar, negotiation on both sides, and frames.

`upwire.protocol.extensions.permessage_deflate` negotiates the extension and compresses messages; the
connection state machine applies it. What a connection sends is read back from `data_to_send()` and inflated
here with a reference zlib inflater that uses exactly the negotiated window and context takeover, so a
compressor that breaks a negotiated limit fails these tests even when upwire's own inflater would cope.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.exceptions import InvalidHandshake
from upwire.protocol import Connection, Ping, Pong, ProtocolFailure, Role, State
from upwire.protocol.events import Event
from upwire.protocol.extensions import (
    ClientPerMessageDeflateFactory,
    ExtensionParams,
    NegotiationError,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    parse_extensions,
    serialize_extensions,
)
from upwire.protocol.handshake import ClientHandshake, ServerHandshake, accept_key
from upwire.protocol.http import Headers, Request, Response

from .wire import WireFrame, masked, read_frames, sent_close, sent_frames, split_at

FAST = settings(max_examples=200, deadline=None)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# RFC 7692 §7.2.1: a message's compressed data ends with an empty stored block minus these 4 octets.
TAIL = b"\x00\x00\xff\xff"

# RFC 7692 §7.2.3.1 and §7.2.3.2: "Hello" compressed, then "Hello" again with the first as context.
HELLO_DEFLATED = bytes.fromhex("f248cdc9c90700")
HELLO_AGAIN_WITH_CONTEXT = bytes.fromhex("f200110000")

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# ---------------------------------------------------------------- helpers


def frame(first_byte: int, payload: bytes, *, mask: bool) -> bytes:
    """One frame with `first_byte` (FIN, RSV, opcode) and the shortest length encoding."""
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes([first_byte, bit | n])
    elif n < 65536:
        header = bytes([first_byte, bit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([first_byte, bit | 127]) + n.to_bytes(8, "big")
    return masked(header, payload) if mask else header + payload


def from_client(first_byte: int, payload: bytes) -> bytes:
    return frame(first_byte, payload, mask=True)


def from_server(first_byte: int, payload: bytes) -> bytes:
    return frame(first_byte, payload, mask=False)


def deflate(data: bytes, compressor: zlib._Compress | None = None, wbits: int = 15) -> bytes:
    """Compress one message as RFC 7692 §7.2.1 says: sync flush, then drop the trailing 4 octets."""
    if compressor is None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


class ReferenceInflater:
    """Inflate the messages one side sent with exactly the negotiated window and context takeover."""

    def __init__(self, wbits: int, no_context_takeover: bool) -> None:
        self.wbits = wbits
        self.no_context_takeover = no_context_takeover
        self._inflater = zlib.decompressobj(wbits=-wbits)

    def message(self, compressed: bytes) -> bytes:
        if self.no_context_takeover:
            self._inflater = zlib.decompressobj(wbits=-self.wbits)
        return self._inflater.decompress(compressed + TAIL)


def messages_on_the_wire(frames: list[WireFrame]) -> Iterator[tuple[int, int, bytes]]:
    """(opcode, rsv of the first frame, joined payload) of each data message in `frames`."""
    opcode = rsv = 0
    parts: list[bytes] = []
    for f in frames:
        if f.opcode >= 8:
            continue
        if f.opcode:
            opcode, rsv, parts = f.opcode, f.rsv, []
        parts.append(f.payload)
        if f.fin:
            yield opcode, rsv, b"".join(parts)


def negotiate(
    client_factory: ClientPerMessageDeflateFactory, server_factory: ServerPerMessageDeflateFactory
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Run the factories' offer/answer; return the (client, server) extensions."""
    server_extension = server_factory.accept(client_factory.offer(), [])
    assert isinstance(server_extension, PerMessageDeflate)
    client_extension = client_factory.accept(server_extension.response_params(), [])
    assert isinstance(client_extension, PerMessageDeflate)
    return client_extension, server_extension


def pair(
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: int | None = None,
    client_max_window_bits: int | bool | None = True,
    max_message_size: int | None = MiB,
) -> tuple[Connection, Connection]:
    """A (client, server) pair of connections that negotiated permessage-deflate with these parameters."""
    client_extension, server_extension = negotiate(
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=server_no_context_takeover,
            client_no_context_takeover=client_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
            client_max_window_bits=client_max_window_bits,
        ),
        ServerPerMessageDeflateFactory(server_max_window_bits=None),
    )
    return (
        Connection(Role.CLIENT, max_message_size=max_message_size, extensions=[client_extension]),
        Connection(Role.SERVER, max_message_size=max_message_size, extensions=[server_extension]),
    )


def deflate_server(max_message_size: int | None = MiB, **params: bool | int | None) -> Connection:
    return pair(max_message_size=max_message_size, **params)[1]  # type: ignore[arg-type]


def deflate_client(max_message_size: int | None = MiB, **params: bool | int | None) -> Connection:
    return pair(max_message_size=max_message_size, **params)[0]  # type: ignore[arg-type]


def assert_failed(connection: Connection, events: list[Event], code: int) -> None:
    """The last event is a failure with `code` and a close frame with `code` is on the wire."""
    assert events and isinstance(events[-1], ProtocolFailure), events
    assert events[-1].code == code, events[-1]
    assert sent_close(connection)[0] == code
    assert connection.close_code == code
    assert connection.transport_should_close
    assert connection.state is not State.OPEN


def answer_of(params: ExtensionParams) -> dict[str, str | None]:
    found = dict(params)
    assert len(found) == len(params), f"duplicate parameter in the answer {params}"
    return found


# ---------------------------------------------------------------- header grammar (RFC 6455 §9.1)


def test_parse_a_browser_offer() -> None:
    assert parse_extensions(["permessage-deflate; client_max_window_bits"]) == [
        ("permessage-deflate", [("client_max_window_bits", None)])
    ]


def test_parse_several_offers_in_one_value_and_across_values_in_order() -> None:
    values = [
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, x-foo",
        "permessage-deflate",
    ]
    assert parse_extensions(values) == [
        (
            "permessage-deflate",
            [("server_no_context_takeover", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
        ("permessage-deflate", []),
    ]


def test_parse_allows_optional_whitespace_around_separators() -> None:
    value = (
        "  permessage-deflate ;client_max_window_bits = 12 ;  server_no_context_takeover  ,x-foo "
    )
    assert parse_extensions([value]) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", "12"), ("server_no_context_takeover", None)],
        ),
        ("x-foo", []),
    ]


def test_parse_unquotes_quoted_values() -> None:
    assert parse_extensions(['permessage-deflate; server_max_window_bits="10"']) == [
        ("permessage-deflate", [("server_max_window_bits", "10")])
    ]


def test_parse_unescapes_quoted_pairs_in_quoted_values() -> None:
    assert parse_extensions(['x-foo; a="\\1\\0"']) == [("x-foo", [("a", "10")])]


def test_parse_lowercases_names_which_are_case_insensitive() -> None:
    assert parse_extensions(["PerMessage-Deflate; Client_Max_Window_Bits"]) == [
        ("permessage-deflate", [("client_max_window_bits", None)])
    ]


def test_parse_ignores_empty_list_elements() -> None:
    # RFC 9110 §5.6.1 (RFC 7230 §7): a recipient MUST accept and ignore empty list elements.
    assert parse_extensions(["permessage-deflate, , x-foo,"]) == [
        ("permessage-deflate", []),
        ("x-foo", []),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "permessage-deflate;",  # a parameter without a name
        "; permessage-deflate",
        "permessage deflate",  # two tokens
        "permessage-deflate; server_max_window_bits=",  # "=" without a value
        'permessage-deflate; server_max_window_bits="10',  # unterminated quoted string
        'permessage-deflate; server_max_window_bits="1 0"',  # quoted value that is not a token
        'permessage-deflate; server_max_window_bits=""',
        "permessage-deflate; a=b=c",
        "permessage-deflate; a b",
        "permessage-deflate / x",
        "perm{essage",
        "é",
    ],
)
def test_parse_rejects_invalid_headers(value: str) -> None:
    with pytest.raises(NegotiationError):
        parse_extensions([value])


def test_serialize_writes_offers_in_order_with_bare_and_valued_parameters() -> None:
    elements: list[tuple[str, ExtensionParams]] = [
        (
            "permessage-deflate",
            [("client_no_context_takeover", None), ("server_max_window_bits", "10")],
        ),
        ("permessage-deflate", []),
    ]
    value = serialize_extensions(elements)
    assert value == (
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10, permessage-deflate"
    )
    assert parse_extensions([value]) == elements


# ---------------------------------------------------------------- server negotiation (RFC 7692 §7.1)

WINDOW_BITS = list(range(8, 16))
# Each parameter absent or present, each window value, client_max_window_bits also without a value.
OFFER_COMBINATIONS = list(
    itertools.product(
        [False, True], [False, True], [None, *WINDOW_BITS], [None, True, *WINDOW_BITS]
    )
)


def offer_params(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: int | None,
    client_max_window_bits: int | bool | None,
) -> ExtensionParams:
    params: ExtensionParams = []
    if server_no_context_takeover:
        params.append(("server_no_context_takeover", None))
    if client_no_context_takeover:
        params.append(("client_no_context_takeover", None))
    if server_max_window_bits is not None:
        params.append(("server_max_window_bits", str(server_max_window_bits)))
    if client_max_window_bits is True:
        params.append(("client_max_window_bits", None))
    elif client_max_window_bits is not None:
        params.append(("client_max_window_bits", str(client_max_window_bits)))
    return params


def combination_id(combination: tuple[bool, bool, int | None, int | bool | None]) -> str:
    snct, cnct, smwb, cmwb = combination
    parts = ["snct"] * snct + ["cnct"] * cnct
    if smwb is not None:
        parts.append(f"smwb{smwb}")
    if cmwb is True:
        parts.append("cmwb")
    elif cmwb is not None:
        parts.append(f"cmwb{cmwb}")
    return "-".join(parts) or "bare"


def window_probe(bits: int) -> bytes:
    """A message that repeats a random block just longer than a 2**bits window.

    A compressor with a larger window would refer back past 2**bits bytes, which an inflater using
    exactly `bits` rejects ("invalid distance too far back"). The block is random letters from 16, so
    that it compresses by itself (to about half) and the message is sent compressed whatever the window
    (an incompressible large message is sent as it is).
    """
    size = (1 << bits) + 64 if bits < 15 else 2000
    block = bytes(b"abcdefghijklmnop"[byte & 15] for byte in os.urandom(size))
    return block + block + b"tail"


@pytest.mark.parametrize(
    "combination", OFFER_COMBINATIONS, ids=map(combination_id, OFFER_COMBINATIONS)
)
def test_server_answer_to_every_offer_stays_within_it_and_works(
    combination: tuple[bool, bool, int | None, int | bool | None],
) -> None:
    snct, cnct, smwb, cmwb = combination
    extension = ServerPerMessageDeflateFactory(server_max_window_bits=None).accept(
        offer_params(*combination), []
    )
    assert isinstance(extension, PerMessageDeflate)
    answer = answer_of(extension.response_params())
    assert set(answer) <= {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
    # §7.1.1.1: a server that accepts server_no_context_takeover must say so.
    assert ("server_no_context_takeover" in answer) is snct
    assert ("client_no_context_takeover" in answer) is cnct
    # §7.1.2.1: server_max_window_bits in the answer only when offered, at most the offered value.
    if smwb is None:
        assert "server_max_window_bits" not in answer
    else:
        assert answer["server_max_window_bits"] == str(smwb)
    # §7.1.2.2: client_max_window_bits in the answer only when offered, at most the offered value.
    if cmwb is None or cmwb is True:
        assert "client_max_window_bits" not in answer
    else:
        assert answer["client_max_window_bits"] == str(cmwb)
    for value in answer.values():
        assert value is None or (value.isdigit() and 8 <= int(value) <= 15)

    # The server's compressor honours its answer: an inflater with exactly that window and context
    # takeover decodes what it sends (8 bits too, which zlib compresses with 9: see `_compressor`).
    server = Connection(Role.SERVER, extensions=[extension])
    reference = ReferenceInflater(smwb or 15, no_context_takeover=snct)
    probe = window_probe(smwb or 15)
    server.send_message(probe)
    server.send_message(probe)
    sent = list(messages_on_the_wire(sent_frames(server)))
    assert [rsv for _, rsv, _ in sent] == [0b100, 0b100]
    assert [reference.message(data) for _, _, data in sent] == [probe, probe]
    if snct:
        # Without context takeover the second message is compressed alone: the same bytes again.
        assert sent[0][2] == sent[1][2]


# Every combination is negotiated by the two factories.
CLIENT_COMBINATIONS = OFFER_COMBINATIONS


@pytest.mark.parametrize(
    "combination", CLIENT_COMBINATIONS, ids=map(combination_id, CLIENT_COMBINATIONS)
)
def test_client_factory_accepts_the_servers_answer_and_both_sides_agree(
    combination: tuple[bool, bool, int | None, int | bool | None],
) -> None:
    snct, cnct, smwb, cmwb = combination
    client_factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=snct,
        client_no_context_takeover=cnct,
        server_max_window_bits=smwb,
        client_max_window_bits=cmwb,
    )
    assert client_factory.offer() == offer_params(*combination)
    client_extension, server_extension = negotiate(
        client_factory, ServerPerMessageDeflateFactory(server_max_window_bits=None)
    )
    client = Connection(Role.CLIENT, extensions=[client_extension])
    server = Connection(Role.SERVER, extensions=[server_extension])
    client_bits = cmwb if isinstance(cmwb, int) and cmwb is not True else 15
    probe = window_probe(client_bits)
    client.send_message(probe)
    client.send_message(probe)
    wire = b"".join(client.data_to_send())
    reference = ReferenceInflater(client_bits, no_context_takeover=cnct)
    sent = list(messages_on_the_wire(read_frames(wire)))
    assert [reference.message(data) for _, _, data in sent] == [probe, probe]
    if cnct:
        assert sent[0][2] == sent[1][2]
    assert server.receive_data(wire) == [probe, probe]
    server.send_message("Hello")
    server.send_message("Hello")
    assert client.receive_data(b"".join(server.data_to_send())) == ["Hello", "Hello"]


def test_default_server_factory_answers_a_browser_offer_with_a_12_bit_server_window() -> None:
    extension = ServerPerMessageDeflateFactory().accept([("client_max_window_bits", None)], [])
    assert extension is not None
    assert extension.response_params() == [("server_max_window_bits", "12")]


def test_server_factory_lowers_the_offered_server_window_to_its_own() -> None:
    factory = ServerPerMessageDeflateFactory(server_max_window_bits=10)
    extension = factory.accept([("server_max_window_bits", "13")], [])
    assert extension is not None
    assert answer_of(extension.response_params()) == {"server_max_window_bits": "10"}
    extension = factory.accept([("server_max_window_bits", "9")], [])
    assert extension is not None
    assert answer_of(extension.response_params()) == {"server_max_window_bits": "9"}


def test_server_factory_asks_for_a_smaller_client_window_only_when_offered() -> None:
    factory = ServerPerMessageDeflateFactory(client_max_window_bits=10)
    offered_bare = factory.accept([("client_max_window_bits", None)], [])
    offered_9 = factory.accept([("client_max_window_bits", "9")], [])
    not_offered = factory.accept([], [])
    assert offered_bare is not None and offered_9 is not None and not_offered is not None
    assert answer_of(offered_bare.response_params())["client_max_window_bits"] == "10"
    assert answer_of(offered_9.response_params())["client_max_window_bits"] == "9"
    assert "client_max_window_bits" not in answer_of(not_offered.response_params())


def test_server_factory_with_no_context_takeover_configured_says_so_unasked() -> None:
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    )
    extension = factory.accept([], [])
    assert extension is not None
    assert answer_of(extension.response_params()) == {
        "server_no_context_takeover": None,
        "client_no_context_takeover": None,
        "server_max_window_bits": "12",
    }


@pytest.mark.parametrize(
    "offer",
    [
        [("x_unknown", None)],
        [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
        [("client_max_window_bits", None), ("client_max_window_bits", "10")],
        [("server_no_context_takeover", "1")],
        [("client_no_context_takeover", "yes")],
        [("server_max_window_bits", None)],
        [("server_max_window_bits", "7")],
        [("server_max_window_bits", "16")],
        [("server_max_window_bits", "08")],
        [("server_max_window_bits", "010")],
        [("server_max_window_bits", "ten")],
        [("server_max_window_bits", "+9")],
        [("client_max_window_bits", "7")],
        [("client_max_window_bits", "16")],
        [("client_max_window_bits", "0")],
        # Past int()'s 4300-digit limit, and a digit to str.isdigit that int() refuses: declined, not
        # an error escaping the negotiation (a 500 before).
        [("server_max_window_bits", "1" * 4301)],
        [("client_max_window_bits", "1" * 4301)],
        [("server_max_window_bits", "\u00b9")],
        [
            ("server_max_window_bits", "\u0661\u0662")
        ],  # Arabic-Indic 12: int() reads it, RFC 7692 does not
    ],
    ids=lambda offer: str(offer)[:60],
)
def test_server_declines_invalid_offers(offer: ExtensionParams) -> None:
    for factory in (
        ServerPerMessageDeflateFactory(),
        ServerPerMessageDeflateFactory(server_max_window_bits=None),
    ):
        assert factory.accept(offer, []) is None


def test_server_declines_a_second_permessage_deflate() -> None:
    factory = ServerPerMessageDeflateFactory()
    first = factory.accept([], [])
    assert first is not None
    assert factory.accept([], [first]) is None


def ws_request(extensions: str | None) -> Request:
    headers = Headers(
        [
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", RFC_KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    if extensions is not None:
        headers.add("Sec-WebSocket-Extensions", extensions)
    return Request("GET", "/", headers)


def server_answer(
    offer: str | None, factory: ServerPerMessageDeflateFactory | None = None
) -> str | None:
    handshake = ServerHandshake(extensions=[factory or ServerPerMessageDeflateFactory()])
    accepted = handshake.accept(ws_request(offer))
    values = accepted.response.headers.get_all("Sec-WebSocket-Extensions")
    assert len(values) <= 1
    assert len(accepted.extensions) == len(values)
    return values[0] if values else None


def test_server_handshake_chooses_the_first_acceptable_of_several_offers() -> None:
    offer = (
        "permessage-deflate; server_max_window_bits=7, "
        "permessage-deflate; x_unknown, "
        "permessage-deflate; server_max_window_bits=16, "
        "permessage-deflate; server_no_context_takeover; client_max_window_bits, "
        "permessage-deflate"
    )
    assert server_answer(offer) == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
    )


def test_server_handshake_accepts_one_permessage_deflate_and_ignores_unknown_extensions() -> None:
    offer = "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits, permessage-deflate"
    assert server_answer(offer) == "permessage-deflate; server_max_window_bits=12"


def test_server_handshake_with_only_declined_offers_answers_without_the_header() -> None:
    assert server_answer("permessage-deflate; server_max_window_bits=7") is None
    assert server_answer("permessage-deflate; foo=bar, x-webkit-deflate-frame") is None
    assert server_answer(None) is None


def test_server_handshake_accepts_quoted_window_values() -> None:
    factory = ServerPerMessageDeflateFactory(server_max_window_bits=None)
    offer = 'permessage-deflate; server_max_window_bits="10"; client_max_window_bits="11"'
    assert server_answer(offer, factory) == (
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11"
    )


def test_server_handshake_answers_an_unparsable_extensions_header_with_400() -> None:
    handshake = ServerHandshake(extensions=[ServerPerMessageDeflateFactory()])
    with pytest.raises(InvalidHandshake) as raised:
        handshake.accept(ws_request("permessage-deflate; ="))
    assert raised.value.status == 400


# ---------------------------------------------------------------- client checks of the answer (RFC 7692 §7.1)


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        # §7.1.1.1: the server must accept server_no_context_takeover when the client asked for it.
        ({"server_no_context_takeover": True}, []),
        # §7.1.2.1: server_max_window_bits missing or above the requested window.
        ({"server_max_window_bits": 10}, []),
        ({"server_max_window_bits": 10}, [("server_max_window_bits", "11")]),
        ({"server_max_window_bits": 10}, [("server_max_window_bits", "15")]),
        # §7.1.2.2: client_max_window_bits in the answer only when offered, not above the offer.
        ({"client_max_window_bits": None}, [("client_max_window_bits", "10")]),
        ({"client_max_window_bits": 10}, [("client_max_window_bits", "11")]),
        ({"client_max_window_bits": True}, [("client_max_window_bits", None)]),
        # Invalid parameters (§7.1: the client must fail the connection).
        ({}, [("x_unknown", None)]),
        ({}, [("server_no_context_takeover", None), ("server_no_context_takeover", None)]),
        ({}, [("server_no_context_takeover", "1")]),
        ({}, [("client_no_context_takeover", "1")]),
        ({}, [("server_max_window_bits", None)]),
        ({}, [("server_max_window_bits", "7")]),
        ({}, [("server_max_window_bits", "16")]),
        ({}, [("server_max_window_bits", "09")]),
        ({}, [("server_max_window_bits", "nine")]),
        ({}, [("client_max_window_bits", "16")]),
        ({}, [("client_max_window_bits", "-9")]),
    ],
    ids=str,
)
def test_client_rejects_answers_its_offer_does_not_allow(
    offer: dict[str, bool | int | None], answer: ExtensionParams
) -> None:
    factory = ClientPerMessageDeflateFactory(**offer)  # type: ignore[arg-type]
    with pytest.raises(NegotiationError):
        factory.accept(answer, [])


@pytest.mark.parametrize(
    ("offer", "answer", "expected"),
    [
        ({}, [], (False, False, 15, 15)),
        ({}, [("server_max_window_bits", "9")], (False, False, 15, 9)),
        ({}, [("client_max_window_bits", "9")], (False, False, 9, 15)),
        ({}, [("server_no_context_takeover", None)], (False, True, 15, 15)),
        ({}, [("client_no_context_takeover", None)], (True, False, 15, 15)),
        ({"client_no_context_takeover": True}, [], (True, False, 15, 15)),
        ({"client_max_window_bits": 10}, [], (False, False, 10, 15)),
        ({"client_max_window_bits": 10}, [("client_max_window_bits", "9")], (False, False, 9, 15)),
        # 8 bits (valid, §7.1.2.2), which zlib cannot compress with: accepted, and this side sends
        # uncompressed messages (see the next test).
        ({}, [("client_max_window_bits", "8")], (False, False, 8, 15)),
        ({"client_max_window_bits": 9}, [("client_max_window_bits", "8")], (False, False, 8, 15)),
        ({"server_max_window_bits": 10}, [("server_max_window_bits", "8")], (False, False, 15, 8)),
        (
            {"server_max_window_bits": 10},
            [("server_max_window_bits", "10")],
            (False, False, 15, 10),
        ),
        # aiohttp answers an offer of 15 without the parameter (§7.1.2.1 asks for it): 15 is no limit.
        ({"server_max_window_bits": 15}, [], (False, False, 15, 15)),
    ],
    ids=str,
)
def test_client_accepts_answers_within_its_offer(
    offer: dict[str, bool | int | None],
    answer: ExtensionParams,
    expected: tuple[bool, bool, int, int],
) -> None:
    extension = ClientPerMessageDeflateFactory(**offer).accept(answer, [])  # type: ignore[arg-type]
    assert isinstance(extension, PerMessageDeflate)
    assert (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    ) == expected


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no_context_takeover"])
def test_a_large_message_deflate_cannot_shrink_is_sent_as_it_is(takeover: bool) -> None:
    # RFC 7692 §6.1: any message may go uncompressed. Random bytes grow under deflate, and peers limit
    # the compressed frame's size: from 16 KiB, such a message is sent plain, and the next message
    # comes from a fresh compressor (the old one saw bytes the peer never did): the peer's inflater,
    # with context takeover, goes on with its stream and inflates it.
    client, server = pair(client_no_context_takeover=not takeover)
    noise = os.urandom(64 * 1024)
    # Random letters: half the size by itself, a few bytes as a copy of the first message.
    text = "".join(random.Random(7).choices("abcdefghijklmnop", k=20000))
    for message in (text, noise, text, noise[:8000], text):
        client.send_message(message)
    wire = b"".join(client.data_to_send())
    sent = list(messages_on_the_wire(read_frames(wire)))
    assert [rsv for _, rsv, _ in sent] == [0b100, 0, 0b100, 0b100, 0b100]
    assert sent[1][2] == noise
    assert server.receive_data(wire) == [text, noise, text, noise[:8000], text]
    # After the plain message the compressor starts afresh (the first message is not referred to);
    # with context takeover the fifth message refers to the third again.
    assert len(sent[2][2]) > 5000
    if takeover:
        assert len(sent[4][2]) < 200


def test_8_bit_windows_both_ways_compress_and_inflate_within_256_bytes() -> None:
    # RFC 7692 §7.1.2: 8 is a valid window. zlib has no 8-bit compressor; with 9 bits its matches reach
    # back at most 250 bytes, which an inflater held to exactly 8 bits (zlib's own) decodes. Messages
    # repeat blocks at distances from 200 to 520 bytes, with context takeover across them.
    handshake = ClientHandshake(
        "a",
        "/",
        extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=8)],
        key=RFC_KEY,
    )
    server_handshake = ServerHandshake(
        extensions=[ServerPerMessageDeflateFactory(client_max_window_bits=8)]
    )
    accepted = server_handshake.accept(
        ws_request(handshake.request.headers.get_all("Sec-WebSocket-Extensions")[0])
    )
    assert accepted.response.headers.get_all("Sec-WebSocket-Extensions") == [
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"
    ]
    handshake.check_response(ok_response(accepted.response.headers.get("Sec-WebSocket-Extensions")))
    client = Connection(Role.CLIENT, extensions=handshake.extensions)
    server = Connection(Role.SERVER, extensions=accepted.extensions)
    rng = random.Random(8)
    messages = []
    for _ in range(40):
        block = bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randrange(200, 520)))
        messages.append(block * rng.randrange(2, 6))
    for sender, receiver in ((client, server), (server, client)):
        strict = ReferenceInflater(8, no_context_takeover=False)
        for message in messages:
            sender.send_message(message)
        wire = b"".join(sender.data_to_send())
        sent = list(messages_on_the_wire(read_frames(wire)))
        assert [rsv for _, rsv, _ in sent] == [0b100] * len(messages)
        assert [strict.message(data) for _, _, data in sent] == messages
        assert receiver.receive_data(wire) == messages


def ok_response(extensions: str | None) -> Response:
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(RFC_KEY)),
        ]
    )
    if extensions is not None:
        headers.add("Sec-WebSocket-Extensions", extensions)
    return Response(101, headers)


def client_handshake(**offer: bool | int | None) -> ClientHandshake:
    factory = ClientPerMessageDeflateFactory(**offer)  # type: ignore[arg-type]
    return ClientHandshake("a", "/", extensions=[factory], key=RFC_KEY)


def test_client_handshake_offers_permessage_deflate_like_a_browser_by_default() -> None:
    assert client_handshake().request.headers.get_all("Sec-WebSocket-Extensions") == [
        "permessage-deflate; client_max_window_bits"
    ]


@pytest.mark.parametrize(
    "answer",
    [
        "x-webkit-deflate-frame",  # not offered
        "permessage-deflate, permessage-deflate",  # accepted twice
        "permessage-deflate; client_max_window_bits",  # no value in an answer
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; foo",
        "permessage-deflate; =",
    ],
)
def test_client_handshake_fails_on_an_answer_it_cannot_accept(answer: str) -> None:
    handshake = client_handshake()
    with pytest.raises(InvalidHandshake):
        handshake.check_response(ok_response(answer))


def test_client_handshake_fails_when_server_no_context_takeover_is_ignored() -> None:
    handshake = client_handshake(server_no_context_takeover=True)
    with pytest.raises(InvalidHandshake):
        handshake.check_response(ok_response("permessage-deflate"))


def test_client_handshake_without_an_answer_negotiates_nothing() -> None:
    handshake = client_handshake()
    handshake.check_response(ok_response(None))
    assert handshake.extensions == []


def test_client_handshake_accepts_a_quoted_answer() -> None:
    handshake = client_handshake(server_max_window_bits=10)
    handshake.check_response(ok_response('permessage-deflate; server_max_window_bits="9"'))
    (extension,) = handshake.extensions
    assert isinstance(extension, PerMessageDeflate)
    assert extension.remote_max_window_bits == 9


def test_client_handshake_takes_an_answer_to_any_of_its_offers() -> None:
    # RFC 7692 §5: offers in order of preference; the server may accept a later one. The answer to the
    # second offer below breaks the first's server_max_window_bits=10, and fits the second.
    handshake = ClientHandshake(
        "a",
        "/",
        extensions=[
            ClientPerMessageDeflateFactory(
                server_max_window_bits=10, client_no_context_takeover=True
            ),
            ClientPerMessageDeflateFactory(compress_level=1),
        ],
        key=RFC_KEY,
    )
    assert handshake.request.headers.get_all("Sec-WebSocket-Extensions") == [
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; "
        "client_max_window_bits, permessage-deflate; client_max_window_bits"
    ]
    handshake.check_response(ok_response("permessage-deflate; server_max_window_bits=12"))
    (extension,) = handshake.extensions
    assert isinstance(extension, PerMessageDeflate)
    assert extension.remote_max_window_bits == 12
    assert not extension.local_no_context_takeover  # the second offer's settings, not the first's
    # An answer that fits none of the offers names why for each.
    handshake = ClientHandshake(
        "a",
        "/",
        extensions=[
            ClientPerMessageDeflateFactory(server_max_window_bits=10),
            ClientPerMessageDeflateFactory(server_max_window_bits=11),
        ],
        key=RFC_KEY,
    )
    with pytest.raises(InvalidHandshake, match=r"offer 1: .* 10; offer 2: .* 11"):
        handshake.check_response(ok_response("permessage-deflate; server_max_window_bits=12"))


def test_client_and_server_handshakes_agree_end_to_end() -> None:
    client = ClientHandshake(
        "a",
        "/",
        extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True)],
        key=RFC_KEY,
    )
    accepted = ServerHandshake(extensions=[ServerPerMessageDeflateFactory()]).accept(client.request)
    client.check_response(accepted.response)
    (client_extension,) = client.extensions
    assert len(accepted.extensions) == 1
    assert accepted.response.headers.get_all("Sec-WebSocket-Extensions") == [
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
    ]
    assert isinstance(client_extension, PerMessageDeflate)
    assert client_extension.remote_no_context_takeover
    assert client_extension.remote_max_window_bits == 12


# ---------------------------------------------------------------- RFC 7692 §7.2.3 examples


def test_client_receives_the_rfc_compressed_hello() -> None:
    # §7.2.3.1: "Hello" compressed, in one unmasked frame with RSV1.
    assert deflate_client().receive_data(from_server(0xC1, HELLO_DEFLATED)) == ["Hello"]


def test_server_receives_the_rfc_compressed_hello_masked() -> None:
    assert deflate_server().receive_data(from_client(0xC1, HELLO_DEFLATED)) == ["Hello"]


def test_client_receives_the_rfc_compressed_hello_in_two_fragments() -> None:
    # §7.2.3.1: 0x41 0x03 0xf2 0x48 0xcd / 0x80 0x04 0xc9 0xc9 0x07 0x00.
    conn = deflate_client()
    assert conn.receive_data(bytes.fromhex("4103f248cd")) == []
    assert conn.receive_data(bytes.fromhex("8004c9c90700")) == ["Hello"]


def test_client_receives_the_rfc_second_hello_that_uses_the_first_as_context() -> None:
    # §7.2.3.2: the second "Hello" is a back-reference into the first message.
    conn = deflate_client()
    wire = from_server(0xC1, HELLO_DEFLATED) + from_server(0xC1, HELLO_AGAIN_WITH_CONTEXT)
    assert conn.receive_data(wire) == ["Hello", "Hello"]


def test_server_sends_the_rfc_hello_bytes_then_the_context_takeover_bytes() -> None:
    conn = deflate_server()
    conn.send_message("Hello")
    conn.send_message("Hello")
    assert b"".join(conn.data_to_send()) == (
        bytes.fromhex("c107") + HELLO_DEFLATED + bytes.fromhex("c105") + HELLO_AGAIN_WITH_CONTEXT
    )


def test_client_sends_the_rfc_hello_bytes_masked_then_the_context_takeover_bytes() -> None:
    conn = deflate_client()
    conn.send_message("Hello")
    conn.send_message("Hello")
    frames = sent_frames(conn)
    assert [(f.fin, f.rsv, f.opcode, f.payload) for f in frames] == [
        (True, 0b100, 1, HELLO_DEFLATED),
        (True, 0b100, 1, HELLO_AGAIN_WITH_CONTEXT),
    ]
    assert all(f.mask_key is not None for f in frames)


def test_client_receives_the_rfc_hello_in_a_no_compression_block() -> None:
    # §7.2.3.3: a stored block ("BTYPE" 00) is valid compressed data.
    conn = deflate_client()
    assert conn.receive_data(from_server(0xC1, bytes.fromhex("000500faff48656c6c6f00"))) == [
        "Hello"
    ]


# RFC 7692 §7.2.3.4: "Hello" in a DEFLATE block with BFINAL set (7 octets, what Z_FINISH gives), then one
# octet 0x00: the header bits of the empty stored block the appended 00 00 ff ff completes.
HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")


def test_client_receives_the_rfc_hello_in_a_block_with_bfinal_set() -> None:
    # §7.2.3.4: a sender may end a message with a final block instead of an empty stored block.
    conn = deflate_client()
    assert conn.receive_data(from_server(0xC1, HELLO_BFINAL)) == ["Hello"]


@pytest.mark.parametrize(
    "payloads",
    [
        [HELLO_BFINAL],
        [HELLO_BFINAL[:-1]],  # without the 0x00 (a bare Z_FINISH): the appended tail is no data
        [HELLO_BFINAL, b""],  # the stream ends inside the first frame; the last one is empty
        [HELLO_BFINAL[:-1], b"\x00"],
        [HELLO_BFINAL[:-1], b""],
        [HELLO_BFINAL[:-1], b"", b""],
        [HELLO_BFINAL[:3], HELLO_BFINAL[3:-1], b"", b"\x00", b""],
    ],
    ids=lambda payloads: "|".join(p.hex() for p in payloads),
)
def test_a_message_ended_by_bfinal_reads_the_same_however_it_is_fragmented(
    payloads: list[bytes],
) -> None:
    # What follows the final block is the next stream's start, whichever frame it is in: the message
    # after it (compressed in a new stream) reads right each time.
    conn = deflate_client()
    wire = b""
    for index, payload in enumerate(payloads):
        opcode = 0x1 if index == 0 else 0x0
        fin = 0x80 if index == len(payloads) - 1 else 0
        wire += from_server(fin | (0x40 if index == 0 else 0) | opcode, payload)
    wire += from_server(0xC1, HELLO_BFINAL) + from_server(0xC1, HELLO_DEFLATED)
    assert conn.receive_data(wire) == ["Hello", "Hello", "Hello"]


def test_a_stream_after_a_final_block_in_the_same_frame_is_inflated_too() -> None:
    # A sender that flushes with BFINAL blocks (§7.2.3.4) may flush twice in one message: the bytes
    # after the first final block are a new stream, which may refer to the first one's output.
    first = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = first.compress(b"Hello, ") + first.flush(zlib.Z_FINISH)
    second = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=b"Hello, ")
    payload += second.compress(b"Hello, world") + second.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    conn = deflate_client()
    assert conn.receive_data(from_server(0xC1, payload[:-4])) == ["Hello, Hello, world"]


def test_an_empty_compressed_message_is_empty_and_the_stream_goes_on() -> None:
    # No compressed byte at all (the smallest well-formed payload is 0x00): an empty message, and the
    # inflater is not left inside a stored block's header for the next message.
    conn = deflate_client()
    wire = from_server(0xC1, b"") + from_server(0x41, b"") + from_server(0x80, b"")
    wire += from_server(0xC1, HELLO_DEFLATED)
    assert conn.receive_data(wire) == ["", "", "Hello"]


def test_client_receives_the_message_after_one_that_ended_with_bfinal_set() -> None:
    # §7.2.3.4: after a final block the sender starts a new DEFLATE stream for the next message; the
    # inflater must not swallow it (it would otherwise sit at the end of its stream and return nothing).
    conn = deflate_client()
    wire = from_server(0xC1, HELLO_BFINAL) + from_server(0xC1, HELLO_DEFLATED)
    assert conn.receive_data(wire) == ["Hello", "Hello"]


@pytest.mark.parametrize("fragment", [None, 7], ids=["whole", "fragmented"])
def test_streams_ended_by_bfinal_may_refer_to_earlier_messages_with_context_takeover(
    fragment: int | None,
) -> None:
    # §7.2.3.4 with context takeover: each message is a whole DEFLATE stream (Z_FINISH), and the next
    # one starts with the sender's last 2^15 bytes as its dictionary, so it may copy from any of the
    # earlier messages, not only the last one's final frame. Short messages, each frame a few bytes.
    rng = random.Random(7692)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(12)) for _ in range(40)]
    messages = [
        b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 30))) for _ in range(60)
    ]
    history = b""
    wire = b""
    for message in messages:
        compressor = (
            zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=history[-32768:])
            if history
            else zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        )
        payload = compressor.compress(message) + compressor.flush(zlib.Z_FINISH)
        history += message
        size = fragment or len(payload)
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
        for index, piece in enumerate(pieces):
            first = 0x42 if index == 0 else 0x00  # RSV1 and binary on the first frame only
            wire += from_server(first | (0x80 if index == len(pieces) - 1 else 0), piece)
    conn = deflate_client()
    assert conn.receive_data(wire) == messages


@pytest.mark.parametrize("snct", [False, True], ids=["takeover", "server_no_context_takeover"])
def test_a_stream_ended_inside_a_fragmented_message_presets_the_next_with_its_bytes(
    snct: bool,
) -> None:
    # §7.2.3.4 inside one message: the first fragment ends its stream with BFINAL, the second is a new
    # stream that copies from the first; with or without context takeover across messages.
    first = b"the first part of one message, " * 9
    second = b"the first part of one message, and its second"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    part1 = compressor.compress(first) + compressor.flush(zlib.Z_FINISH)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=first)
    part2 = compressor.compress(second) + compressor.flush(zlib.Z_SYNC_FLUSH)
    conn = deflate_client(server_no_context_takeover=snct)
    wire = from_server(0x42, part1) + from_server(0x80, part2[:-4])
    assert conn.receive_data(wire) == [first + second]


def test_a_large_message_ending_a_stream_keeps_only_a_window_of_its_bytes() -> None:
    # The preset of the next stream is the last 2^W bytes: the message itself is not kept alive.
    big = os.urandom(1 << 20)
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    conn = deflate_client(max_message_size=None)
    [message] = conn.receive_data(
        from_server(0xC2, compressor.compress(big) + compressor.flush(zlib.Z_FINISH))
    )
    assert message == big
    [extension] = conn._extensions
    assert isinstance(extension, PerMessageDeflate)
    assert [len(kept) for kept in extension._recent] == [32768]
    assert all(type(kept) is bytes for kept in extension._recent)


def test_invalid_utf8_in_a_compressed_text_after_a_message_of_the_same_read_fails_with_1007() -> (
    None
):
    # The inflater moves on when it inflates the text frame, so the frame cannot wait (as an error
    # behind messages of the same read does) to be parsed again: that inflated other bytes, and a text
    # message the peer never sent was delivered on an open connection.
    conn = deflate_server()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    binary = deflate(b"f\xffebcafa\xfffcd", compressor)
    text = deflate(b"f\xffebcafa\xfffcdbfgfdhhe", compressor)
    events = conn.receive_data(from_client(0xC2, binary) + from_client(0xC1, text))
    assert events[0] == b"f\xffebcafa\xfffcd"
    assert_failed(conn, events, 1007)
    assert not conn.input_pending
    assert conn.receive_data(b"") == []


def test_client_receives_the_rfc_hello_in_two_deflate_blocks() -> None:
    # §7.2.3.5: "He" and "llo" in separate blocks of one message.
    conn = deflate_client()
    payload = bytes.fromhex("f24805000000ffffcac9c90700")
    assert conn.receive_data(from_server(0xC1, payload)) == ["Hello"]


# ---------------------------------------------------------------- RSV1 rules (RFC 7692 §6)


def test_rsv1_on_a_continuation_frame_closes_with_1002() -> None:
    conn = deflate_server()
    events = conn.receive_data(
        from_client(0x41, HELLO_DEFLATED[:3]) + from_client(0xC0, HELLO_DEFLATED[3:])
    )
    assert_failed(conn, events, 1002)


def test_rsv1_on_the_continuation_of_an_uncompressed_message_closes_with_1002() -> None:
    conn = deflate_client()
    events = conn.receive_data(from_server(0x01, b"He") + from_server(0xC0, b"llo"))
    assert_failed(conn, events, 1002)


@pytest.mark.parametrize("first_byte", [0xC9, 0xCA, 0xC8], ids=["ping", "pong", "close"])
def test_rsv1_on_a_control_frame_closes_with_1002(first_byte: int) -> None:
    conn = deflate_server()
    assert_failed(conn, conn.receive_data(from_client(first_byte, b"")), 1002)


def test_rsv1_on_a_ping_between_compressed_fragments_closes_with_1002() -> None:
    conn = deflate_client()
    events = conn.receive_data(from_server(0x41, HELLO_DEFLATED[:3]) + from_server(0xC9, b""))
    assert_failed(conn, events, 1002)


@pytest.mark.parametrize("first_byte", [0xA1, 0x91, 0xE1, 0xB1])
def test_rsv2_and_rsv3_stay_errors_on_a_deflate_connection(first_byte: int) -> None:
    conn = deflate_server()
    assert_failed(conn, conn.receive_data(from_client(first_byte, HELLO_DEFLATED)), 1002)


def test_sender_sets_rsv1_on_the_first_fragment_only_and_never_on_control_frames() -> None:
    conn = deflate_server()
    conn.send_fragment("Hel", fin=False)
    conn.send_ping(b"ping")
    conn.send_fragment("lo ", fin=False)
    conn.send_pong(b"pong")
    conn.send_fragment("world", fin=True)
    conn.send_close(1000, "bye")
    frames = sent_frames(conn)
    assert [(f.opcode, f.rsv, f.fin) for f in frames] == [
        (1, 0b100, False),
        (9, 0, True),
        (0, 0, False),
        (10, 0, True),
        (0, 0, True),
        (8, 0, True),
    ]
    # Control frames are never compressed.
    assert [f.payload for f in frames if f.opcode >= 8] == [b"ping", b"pong", b"\x03\xe8bye"]
    ((_, _, compressed),) = messages_on_the_wire(frames)
    assert ReferenceInflater(15, False).message(compressed) == b"Hello world"


# ---------------------------------------------------------------- fragments and control frames


def test_compressed_message_split_over_many_fragments_is_reassembled() -> None:
    message = ("fragmented and compressed ✓ " * 50).encode()
    compressed = deflate(message)
    pieces = split_at(compressed, [5, 5, 17, 40, len(compressed) - 1])
    wire = from_client(0x41, pieces[0])
    wire += b"".join(from_client(0x00, piece) for piece in pieces[1:-1])
    wire += from_client(0x80, pieces[-1])
    conn = deflate_server()
    assert conn.receive_data(wire) == [message.decode()]


def test_control_frames_between_compressed_fragments_are_answered_and_the_message_completes() -> (
    None
):
    compressed = deflate(b"\x00\x01" * 500)
    conn = deflate_client()
    wire = (
        from_server(0x42, compressed[:4])
        + from_server(0x89, b"one")
        + from_server(0x00, compressed[4:10])
        + from_server(0x8A, b"two")
        + from_server(0x80, compressed[10:])
    )
    assert conn.receive_data(wire) == [Ping(b"one"), Pong(b"two"), b"\x00\x01" * 500]
    (pong,) = sent_frames(conn)
    assert (pong.opcode, pong.rsv, pong.payload) == (10, 0, b"one")


def test_compressed_fragments_fed_one_byte_at_a_time_give_the_same_message() -> None:
    message = os.urandom(300) * 3
    compressed = deflate(message)
    wire = (
        from_client(0x42, compressed[:50])
        + from_client(0x89, b"")
        + from_client(0x80, compressed[50:])
    )
    conn = deflate_server()
    events: list[Event] = []
    for i in range(len(wire)):
        events += conn.receive_data(wire[i : i + 1])
    assert events == [Ping(b""), message]


def test_empty_final_continuation_of_a_compressed_message_is_accepted() -> None:
    conn = deflate_client()
    wire = from_server(0x41, HELLO_DEFLATED) + from_server(0x80, b"")
    assert conn.receive_data(wire) == ["Hello"]


def test_empty_compressed_message_is_accepted() -> None:
    # An empty message compresses to a single 0x00 byte (RFC 7692 §7.2.3.6); an empty payload with
    # RSV1 is also valid DEFLATE once the tail is appended.
    conn = deflate_client()
    assert conn.receive_data(from_server(0xC1, b"\x00") + from_server(0xC2, b"")) == ["", b""]


def test_sender_compresses_an_empty_message_to_one_byte_or_none() -> None:
    conn = deflate_server()
    conn.send_message(b"")
    (f,) = sent_frames(conn)
    assert f.rsv == 0b100 and f.payload in (b"", b"\x00")
    assert deflate_client().receive_data(from_server(0xC2, f.payload)) == [b""]


# ---------------------------------------------------------------- uncompressed messages on a deflate connection


def test_uncompressed_messages_are_accepted_on_a_deflate_connection() -> None:
    # RFC 7692 §6: RSV1 clear means the message is not compressed; both kinds may be mixed.
    conn = deflate_server()
    wire = (
        from_client(0x81, b"plain")
        + from_client(0xC1, HELLO_DEFLATED)
        + from_client(0x02, b"\x00\x01")
        + from_client(0x80, b"\x02")
        + from_client(0xC1, HELLO_AGAIN_WITH_CONTEXT)
    )
    assert conn.receive_data(wire) == ["plain", "Hello", b"\x00\x01\x02", "Hello"]


def test_invalid_utf8_in_an_uncompressed_text_message_still_closes_with_1007() -> None:
    conn = deflate_server()
    assert_failed(conn, conn.receive_data(from_client(0x81, b"\xff")), 1007)


def test_invalid_utf8_once_inflated_closes_with_1007() -> None:
    conn = deflate_server()
    assert_failed(conn, conn.receive_data(from_client(0xC1, deflate(b"ok \xed\xa0\x80"))), 1007)


def test_utf8_character_split_across_compressed_fragments_is_accepted() -> None:
    message = "€uro ✓ 🌍".encode()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    # The first fragment inflates to the first byte of "€" only, the second to the rest.
    first = compressor.compress(message[:1]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = deflate(message[1:], compressor)
    conn = deflate_server()
    wire = from_client(0x41, first) + from_client(0x80, second)
    assert conn.receive_data(wire) == [message.decode()]


# ---------------------------------------------------------------- context takeover (RFC 7692 §7.1.1)


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_sender_with_context_takeover_refers_to_earlier_messages(role: Role) -> None:
    client, server = pair()
    sender = client if role is Role.CLIENT else server
    message = os.urandom(400)
    sender.send_message(message)
    sender.send_message(message)
    first, second = (data for _, _, data in messages_on_the_wire(sent_frames(sender)))
    assert len(second) < 20 < len(first)  # the second is a back-reference to the first
    reference = ReferenceInflater(15, no_context_takeover=False)
    assert [reference.message(first), reference.message(second)] == [message, message]
    with pytest.raises(zlib.error):
        zlib.decompressobj(wbits=-15).decompress(second + TAIL)


@pytest.mark.parametrize(
    ("role", "params"),
    [
        (Role.SERVER, {"server_no_context_takeover": True}),
        (Role.CLIENT, {"client_no_context_takeover": True}),
    ],
)
def test_sender_without_context_takeover_compresses_each_message_alone(
    role: Role, params: dict[str, bool]
) -> None:
    client, server = pair(**params)  # type: ignore[arg-type]
    sender = client if role is Role.CLIENT else server
    message = os.urandom(400)
    for _ in range(3):
        sender.send_message(message)
    sent = [data for _, _, data in messages_on_the_wire(sent_frames(sender))]
    assert sent[0] == sent[1] == sent[2]
    for data in sent:
        assert zlib.decompressobj(wbits=-15).decompress(data + TAIL) == message


@pytest.mark.parametrize(
    ("role", "params"),
    [
        (Role.SERVER, {"server_no_context_takeover": True}),
        (Role.CLIENT, {"client_no_context_takeover": True}),
    ],
)
def test_only_the_direction_without_context_takeover_resets(
    role: Role, params: dict[str, bool]
) -> None:
    # The other direction keeps its context: its second "Hello" is the 5-byte back-reference.
    client, server = pair(**params)  # type: ignore[arg-type]
    other = server if role is Role.CLIENT else client
    other.send_message("Hello")
    other.send_message("Hello")
    assert [data for _, _, data in messages_on_the_wire(sent_frames(other))] == [
        HELLO_DEFLATED,
        HELLO_AGAIN_WITH_CONTEXT,
    ]


def test_receiver_with_context_takeover_decodes_a_message_that_refers_to_the_previous_one() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    messages = [os.urandom(1000), b"", os.urandom(10)]
    messages.append(messages[0] + messages[2])
    wire = b"".join(from_client(0xC2, deflate(m, compressor)) for m in messages)
    assert deflate_server().receive_data(wire) == messages


def test_receiver_resets_its_context_when_the_peer_said_client_no_context_takeover() -> None:
    # The peer promised not to refer back; a message that does anyway cannot be inflated (1007).
    conn = deflate_server(client_no_context_takeover=True)
    wire = from_client(0xC1, HELLO_DEFLATED) + from_client(0xC1, HELLO_AGAIN_WITH_CONTEXT)
    events = conn.receive_data(wire)
    assert events[0] == "Hello"
    assert_failed(conn, events, 1007)


def test_receiver_resets_its_context_when_the_server_said_server_no_context_takeover() -> None:
    conn = deflate_client(server_no_context_takeover=True)
    wire = from_server(0xC1, HELLO_DEFLATED) + from_server(0xC1, HELLO_DEFLATED)
    assert conn.receive_data(wire) == ["Hello", "Hello"]
    conn = deflate_client(server_no_context_takeover=True)
    events = conn.receive_data(
        from_server(0xC1, HELLO_DEFLATED) + from_server(0xC1, HELLO_AGAIN_WITH_CONTEXT)
    )
    assert events[0] == "Hello"
    assert_failed(conn, events, 1007)


def test_uncompressed_message_does_not_disturb_the_compression_context() -> None:
    conn = deflate_client()
    wire = (
        from_server(0xC1, HELLO_DEFLATED)
        + from_server(0x81, b"interlude")
        + from_server(0xC1, HELLO_AGAIN_WITH_CONTEXT)
    )
    assert conn.receive_data(wire) == ["Hello", "interlude", "Hello"]


# ---------------------------------------------------------------- corrupt data (1007) and limits (1009)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff",  # BTYPE 11 is reserved
        b"\x07\x00",  # BFINAL + BTYPE 11
        bytes.fromhex(
            "000500fbff48656c6c6f"
        ),  # stored block whose NLEN is not the complement of LEN
        bytes.fromhex("f200110000"),  # a back-reference with no history
    ],
    ids=["reserved-btype", "reserved-btype-final", "bad-stored-length", "distance-too-far"],
)
def test_corrupt_compressed_data_closes_with_1007(payload: bytes) -> None:
    for conn, wire in (
        (deflate_client(), from_server(0xC2, payload)),
        (deflate_server(), from_client(0xC2, payload)),
    ):
        assert_failed(conn, conn.receive_data(wire), 1007)


def test_corrupt_compressed_fragment_fails_before_the_message_ends() -> None:
    conn = deflate_client()
    assert_failed(conn, conn.receive_data(from_server(0x42, b"\xff\xff\xff")), 1007)


def test_corrupt_data_after_valid_messages_returns_those_first() -> None:
    conn = deflate_client()
    events = conn.receive_data(from_server(0xC1, HELLO_DEFLATED) + from_server(0xC2, b"\xff\xff"))
    assert events[0] == "Hello"
    assert_failed(conn, events, 1007)


@pytest.mark.parametrize("size", [1000, 65536])
def test_inflated_size_exactly_at_max_message_size_is_accepted(size: int) -> None:
    conn = deflate_client(max_message_size=size)
    message = b"a" * size
    assert conn.receive_data(from_server(0xC2, deflate(message))) == [message]


@pytest.mark.parametrize("size", [1000, 65536])
def test_inflated_size_one_byte_over_max_message_size_closes_with_1009(size: int) -> None:
    conn = deflate_client(max_message_size=size)
    compressed = deflate(b"a" * (size + 1))
    assert len(compressed) < size // 10
    assert_failed(conn, conn.receive_data(from_server(0xC2, compressed)), 1009)


def test_inflated_size_of_fragments_counts_towards_max_message_size() -> None:
    compressed = deflate(b"b" * 1001)
    conn = deflate_server(max_message_size=1000)
    wire = from_client(0x42, compressed[:3]) + from_client(0x80, compressed[3:])
    assert_failed(conn, conn.receive_data(wire), 1009)
    compressed = deflate(b"b" * 1000)
    conn = deflate_server(max_message_size=1000)
    wire = from_client(0x42, compressed[:3]) + from_client(0x80, compressed[3:])
    assert conn.receive_data(wire) == [b"b" * 1000]


def test_max_message_size_applies_to_each_compressed_message_not_the_connection() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    message = os.urandom(600)
    conn = deflate_server(max_message_size=1000)
    wire = b"".join(from_client(0xC2, deflate(message, compressor)) for _ in range(5))
    assert conn.receive_data(wire) == [message] * 5


def test_no_limit_inflates_large_messages() -> None:
    message = b"z" * (8 * MiB)
    conn = deflate_client(max_message_size=None)
    assert conn.receive_data(from_server(0xC2, deflate(message))) == [message]


def zeros_bomb(inflated_mib: int) -> bytes:
    """A compressed message of `inflated_mib` MiB of zeros, built from a repeated steady-state block.

    DEFLATE cannot do better than about 1:1032, so 1 GiB takes about 1 MiB; zlib's output for each
    further MiB of zeros (after a sync flush) is the same block, which keeps this fast.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    chunk = bytes(MiB)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert block == compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    stream = first + block * (inflated_mib - 1)
    assert stream.endswith(TAIL)
    return stream[:-4]


def measure(receive: Callable[[], list[Event]]) -> tuple[list[Event], float, int]:
    """Run `receive`; return its events, the seconds it took and the peak of traced memory."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        events = receive()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return events, elapsed, peak


def test_a_1_kib_frame_that_inflates_to_1_mib_closes_with_1009_without_inflating_it() -> None:
    bomb = zeros_bomb(1)
    assert len(bomb) < 1100
    conn = deflate_server(max_message_size=64 * KiB)
    wire = from_client(0xC2, bomb)
    events, elapsed, peak = measure(lambda: conn.receive_data(wire))
    assert_failed(conn, events, 1009)
    assert elapsed < 1
    assert peak < 512 * KiB, f"peak {peak} bytes while refusing a 1 MiB message over a 64 KiB limit"


def test_a_1_mib_frame_that_inflates_to_1_gib_closes_with_1009_quickly_and_without_allocating_it() -> (
    None
):
    bomb = zeros_bomb(1024)
    assert len(bomb) < 1100 * KiB
    conn = deflate_server()  # max_message_size=1 MiB, the default
    wire = from_client(0xC2, bomb)
    events, elapsed, peak = measure(lambda: conn.receive_data(wire))
    assert_failed(conn, events, 1009)
    assert elapsed < 1
    # The frame itself (1 MiB) is copied a few times (unmask, join with the tail); 1 GiB never is.
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB while refusing a 1 GiB message"


def test_a_bomb_in_1_kib_fragments_closes_with_1009_at_the_fragment_that_passes_the_limit() -> None:
    bomb = zeros_bomb(1024)
    pieces = [bomb[i : i + 1036] for i in range(0, len(bomb), 1036)]
    wire = from_client(0x42, pieces[0]) + b"".join(from_client(0x00, p) for p in pieces[1:-1])
    wire += from_client(0x80, pieces[-1])
    conn = deflate_server(max_message_size=4 * MiB)
    events, elapsed, peak = measure(lambda: conn.receive_data(wire))
    assert_failed(conn, events, 1009)
    assert elapsed < 1
    assert peak < 32 * MiB, f"peak {peak / MiB:.1f} MiB while refusing a 1 GiB message"


def test_a_bomb_arriving_in_small_reads_fails_as_soon_as_the_limit_is_passed() -> None:
    bomb = zeros_bomb(8)
    wire = from_client(0xC2, bomb)
    conn = deflate_server(max_message_size=MiB)
    events: list[Event] = []
    for start in range(0, len(wire), 512):
        events += conn.receive_data(wire[start : start + 512])
        if events:
            break
    assert_failed(conn, events, 1009)


# ---------------------------------------------------------------- round trips


texts = st.text(max_size=300)
binaries = st.binary(max_size=3000)
repetitive = st.tuples(st.binary(min_size=1, max_size=700), st.integers(2, 6)).map(
    lambda t: t[0] * t[1]
)
messages_strategy = st.lists(st.one_of(texts, binaries, repetitive), min_size=1, max_size=6)


@FAST
@given(
    messages=messages_strategy,
    sender_role=st.sampled_from([Role.CLIENT, Role.SERVER]),
    no_context_takeover=st.booleans(),
    window_bits=st.integers(9, 15),
    data=st.data(),
)
def test_messages_round_trip_through_compression_in_any_fragmentation(
    messages: list[str | bytes],
    sender_role: Role,
    no_context_takeover: bool,
    window_bits: int,
    data: st.DataObject,
) -> None:
    client_extension, server_extension = negotiate(
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=no_context_takeover,
            client_no_context_takeover=no_context_takeover,
            server_max_window_bits=window_bits,
            client_max_window_bits=window_bits,
        ),
        ServerPerMessageDeflateFactory(server_max_window_bits=None),
    )
    client = Connection(Role.CLIENT, extensions=[client_extension])
    server = Connection(Role.SERVER, extensions=[server_extension])
    sender, receiver = (client, server) if sender_role is Role.CLIENT else (server, client)
    for message in messages:
        cuts = data.draw(st.lists(st.integers(0, len(message)), max_size=4), label="cuts")
        pieces = split_at(message, cuts)
        if len(pieces) == 1:
            sender.send_message(message)
            continue
        for index, piece in enumerate(pieces):
            sender.send_fragment(piece, fin=index == len(pieces) - 1)
            if data.draw(st.booleans(), label="ping"):
                sender.send_ping(b"p")
    wire = b"".join(sender.data_to_send())

    # What the sender put on the wire inflates, with exactly the negotiated window and context
    # takeover, to the messages; RSV1 is set on first frames only.
    frames = read_frames(wire)
    assert all(f.rsv == 0 for f in frames if f.opcode == 0 or f.opcode >= 8)
    reference = ReferenceInflater(window_bits, no_context_takeover)
    on_the_wire = list(messages_on_the_wire(frames))
    assert [rsv for _, rsv, _ in on_the_wire] == [0b100] * len(messages)
    assert [reference.message(payload) for _, _, payload in on_the_wire] == [
        m.encode() if isinstance(m, str) else m for m in messages
    ]

    # The receiver gets them back, whatever the reads.
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="reads")
    events: list[Event] = []
    for chunk in split_at(wire, cuts):
        events += receiver.receive_data(chunk)
    assert [e for e in events if isinstance(e, str | bytes)] == messages
    assert receiver.state is State.OPEN


@settings(max_examples=50, deadline=None)
@given(
    message=st.one_of(texts, binaries, repetitive),
    window_bits=st.integers(9, 15),
    no_context_takeover=st.booleans(),
)
def test_what_zlib_compresses_with_any_allowed_window_is_received(
    message: str | bytes, window_bits: int, no_context_takeover: bool
) -> None:
    # The other direction: a peer's compressor (plain zlib) with any window up to the negotiated one.
    conn = deflate_client(
        server_max_window_bits=window_bits, server_no_context_takeover=no_context_takeover
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -window_bits, 9)
    raw = message.encode() if isinstance(message, str) else message
    opcode = 0xC1 if isinstance(message, str) else 0xC2
    wire = b"".join(
        from_server(opcode, deflate(raw, None if no_context_takeover else compressor, window_bits))
        for _ in range(3)
    )
    assert conn.receive_data(wire) == [message] * 3


def test_a_compressed_frame_is_queued_even_at_once() -> None:
    """A frame with an extension does not go out as built: `send_message(..., at_once=True)` queues it."""
    client, server = pair()
    assert server.send_message(b"x" * 100, True) is None
    sent = b"".join(server.data_to_send())
    (frame,) = read_frames(sent)
    assert frame.rsv == 4 and frame.opcode == 2 and len(frame.payload) < 100  # RSV1: compressed
    assert client.receive_data(sent) == [b"x" * 100]
