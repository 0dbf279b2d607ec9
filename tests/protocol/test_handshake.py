"""Tests of `upwire.protocol.handshake`: the server's checks of the Upgrade request (with the HTTP error to
send) and the client's checks of the 101 answer (RFC 6455 §4)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.exceptions import InvalidHandshake, InvalidStatus, UsageError
from upwire.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from upwire.protocol.handshake import (
    GUID,
    ClientHandshake,
    ServerHandshake,
    accept_key,
    check_request,
    check_subprotocols,
    generate_key,
)
from upwire.protocol.http import (
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    serialize_request,
    serialize_response,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

VALID_FIELDS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
]


def request(
    *,
    method: str = "GET",
    version: str = "1.1",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: tuple[tuple[str, str], ...] = (),
) -> Request:
    """A valid Upgrade request, with fields dropped, replaced or added."""
    replace = replace or {}
    fields = [(n, replace.get(n, v)) for n, v in VALID_FIELDS if n not in drop]
    return Request(method, "/chat", Headers([*fields, *add]), http_version=version)


def refused(req: Request, server: ServerHandshake | None = None) -> InvalidHandshake:
    with pytest.raises(InvalidHandshake) as info:
        (server or ServerHandshake()).accept(req)
    error = info.value
    # Every refusal carries a body that says what is wrong, for the HTTP error response.
    assert error.body.startswith(b"Failed to open a WebSocket connection: ")
    assert str(error).encode() in error.body
    return error


def ok_response(key: str = RFC_KEY, **extra: str) -> Response:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    headers += [(name.replace("_", "-"), value) for name, value in extra.items()]
    return Response(101, headers)


# ---------------------------------------------------------------- keys


def test_accept_key_of_the_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_guid_is_the_rfc_one() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_generated_keys_are_base64_of_16_fresh_bytes() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(base64.b64decode(k, validate=True)) == 16 for k in keys)


# ---------------------------------------------------------------- server: accepted requests


def test_rfc_example_request_is_accepted_with_the_rfc_accept_and_subprotocol() -> None:
    req = RequestReader().feed(RFC_REQUEST)
    assert req is not None
    accepted = ServerHandshake(subprotocols=["chat"]).accept(req)
    assert accepted.subprotocol == "chat"
    assert accepted.response.status == 101
    assert serialize_response(accepted.response) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    "value", ["websocket", "WebSocket", "WEBSOCKET", "foo, websocket", " websocket "]
)
def test_upgrade_header_is_a_case_insensitive_token_list(value: str) -> None:
    assert check_request(request(replace={"Upgrade": value})) == RFC_KEY


@pytest.mark.parametrize(
    "value", ["Upgrade", "upgrade", "keep-alive, Upgrade", "UPGRADE,keep-alive"]
)
def test_connection_header_is_a_case_insensitive_token_list(value: str) -> None:
    assert check_request(request(replace={"Connection": value})) == RFC_KEY


def test_connection_tokens_may_come_in_several_fields() -> None:
    req = request(replace={"Connection": "keep-alive"}, add=(("Connection", "Upgrade"),))
    assert check_request(req) == RFC_KEY


def test_header_names_are_case_insensitive() -> None:
    req = Request("GET", "/", Headers([(n.lower(), v) for n, v in VALID_FIELDS]))
    assert check_request(req) == RFC_KEY


def test_server_prefers_its_own_subprotocol_order() -> None:
    req = request(add=(("Sec-WebSocket-Protocol", "chat, superchat"),))
    assert (
        ServerHandshake(subprotocols=["superchat", "chat"]).accept(req).subprotocol == "superchat"
    )


def test_server_without_a_common_subprotocol_refuses_with_400() -> None:
    # An answer without one would be failed by browsers and Node's ws, which asked for one.
    req = request(add=(("Sec-WebSocket-Protocol", "chat, superchat"),))
    error = refused(req, ServerHandshake(subprotocols=["mqtt", "amqp"]))
    assert error.status == 400
    assert b"the client offered chat, superchat; this server speaks mqtt, amqp" in error.body


def test_a_client_offering_no_subprotocol_is_accepted_without_one() -> None:
    accepted = ServerHandshake(subprotocols=["mqtt"]).accept(request())
    assert accepted.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in accepted.response.headers


def test_a_server_without_subprotocols_ignores_an_offer() -> None:
    req = request(add=(("Sec-WebSocket-Protocol", "chat"),))
    accepted = ServerHandshake().accept(req)
    assert accepted.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in accepted.response.headers


def test_select_subprotocol_hook_chooses_from_the_offer() -> None:
    req = request(add=(("Sec-WebSocket-Protocol", "a, b"), ("Sec-WebSocket-Protocol", "c")))
    seen: list[list[str]] = []

    def select(offered: object) -> str:
        seen.append(list(offered))  # type: ignore[call-overload]
        return "c"

    accepted = ServerHandshake(select_subprotocol=select).accept(req)
    assert seen == [["a", "b", "c"]]
    assert accepted.response.headers["Sec-WebSocket-Protocol"] == "c"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (["chat;q=1, superchat"], "'chat;q=1' is not a token"),
        (["ch@t, superchat"], "'ch@t' is not a token"),
        (["chat superchat"], "'chat superchat' is not a token"),
        (['"chat"'], """'"chat"' is not a token"""),
        (["chat", "caf\u00e9"], "'caf\u00e9' is not a token"),
        (["chat\u00a0"], "'chat\\xa0' is not a token"),
        (["\x1cchat"], "'\\x1cchat' is not a token"),
        ([""], "empty Sec-WebSocket-Protocol"),
        ([" , ,"], "empty Sec-WebSocket-Protocol"),
    ],
)
def test_a_subprotocol_offer_that_is_not_a_list_of_tokens_is_refused_with_400(
    values: list[str], reason: str
) -> None:
    # RFC 6455 §4.2.1 (8), §11.3.4: one or more tokens; a request off the grammar gets an error, and
    # neither the selection nor the 101 sees what is not a token.
    seen: list[object] = []
    for server in (
        ServerHandshake(subprotocols=["chat", "superchat"]),
        ServerHandshake(select_subprotocol=lambda offered: seen.append(offered)),
    ):
        add = tuple(("Sec-WebSocket-Protocol", value) for value in values)
        error = refused(request(add=add), server)
        assert error.status == 400
        assert reason.encode() in error.body
    assert seen == []


def test_empty_list_elements_in_a_subprotocol_offer_are_ignored() -> None:
    req = request(add=(("Sec-WebSocket-Protocol", ", chat,, superchat ,"),))
    assert ServerHandshake(subprotocols=["superchat"]).accept(req).subprotocol == "superchat"


@pytest.mark.parametrize(
    ("add", "shown"),
    [
        ((("Origin", "https://evil.example"),), b"origin https://evil.example is not"),
        ((("Origin", ""),), b"origin (empty) is not"),
        ((), b"origin (none) is not"),
    ],
)
def test_a_refused_origin_is_named_in_the_403(
    add: tuple[tuple[str, str], ...], shown: bytes
) -> None:
    error = refused(request(add=add), ServerHandshake(origins=["https://good.example"]))
    assert error.status == 403
    assert shown in error.body


def test_subprotocols_none_is_none_as_in_websockets() -> None:
    assert check_subprotocols(None) == []
    assert ServerHandshake(subprotocols=None).accept(request()).subprotocol is None


def test_origins_may_be_patterns_that_match_the_whole_origin() -> None:
    # As websockets 17: a compiled pattern admits the origins it matches whole (`re.fullmatch`).
    server = ServerHandshake(origins=[re.compile(r"https://[a-z]+\.good\.example"), None])
    for origin in ("https://app.good.example", "https://api.good.example"):
        assert server.accept(request(add=(("Origin", origin),))).response.status == 101
    assert server.accept(request()).response.status == 101
    for origin in ("https://app.good.example.evil", "http://app.good.example", ""):
        assert refused(request(add=(("Origin", origin),)), server).status == 403


@pytest.mark.parametrize("entry", [b"https://good.example", re.compile(b"https://.*"), 1])
def test_origins_that_are_not_strings_none_or_str_patterns_are_a_type_error(entry: object) -> None:
    with pytest.raises(TypeError, match="origins takes"):
        ServerHandshake(origins=[entry])  # type: ignore[list-item]


def test_select_subprotocol_hook_may_not_invent_a_subprotocol() -> None:
    req = request(add=(("Sec-WebSocket-Protocol", "a"),))
    with pytest.raises(ValueError):
        ServerHandshake(select_subprotocol=lambda offered: "z").accept(req)


def test_extra_headers_are_added_to_the_101() -> None:
    accepted = ServerHandshake(extra_headers=[("Server", "upwire")]).accept(request())
    assert accepted.response.headers["Server"] == "upwire"
    assert accepted.head.endswith(b"\r\nServer: upwire\r\n\r\n")


@pytest.mark.parametrize(
    "extra",
    [[("X-A", "a\r\nSet-Cookie: b")], [("X-A\n", "a")], [("X-A", "a\x00")], [("X-\u00e9", "a")]],
    ids=["crlf-in-value", "lf-in-name", "nul", "name-not-ascii"],
)
def test_extra_headers_that_would_break_the_head_are_refused_at_once(
    extra: list[tuple[str, str]],
) -> None:
    # Refused when the server is set up, not at every handshake (as a 500).
    with pytest.raises((UsageError, UnicodeEncodeError)):
        ServerHandshake(extra_headers=extra)


@settings(max_examples=300, deadline=None)
@given(
    offered=st.lists(st.sampled_from(["chat", "superchat", "mqtt", "v2.x"]), max_size=3),
    supported=st.lists(st.sampled_from(["chat", "superchat", "v2.x"]), max_size=3),
    deflate=st.sampled_from(
        [None, "permessage-deflate", "permessage-deflate; client_max_window_bits"]
    ),
    extra=st.lists(
        st.tuples(
            st.sampled_from(["Server", "X-Id", "Set-Cookie"]), st.text("ab =;\xe9\t", max_size=8)
        ),
        max_size=3,
    ),
    key=st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode()),
)
def test_the_head_written_with_the_101_is_its_response_serialized(
    offered: list[str],
    supported: list[str],
    deflate: str | None,
    extra: list[tuple[str, str]],
    key: str,
) -> None:
    # The 101's bytes are assembled from parts; they must be what serialize_response writes for it.
    if offered and supported and not set(offered) & set(supported):
        offered = [*offered, supported[-1]]  # no subprotocol in common is a 400
    add = [("Sec-WebSocket-Protocol", ", ".join(offered))] if offered else []
    add += [("Sec-WebSocket-Extensions", deflate)] if deflate else []
    req = request(replace={"Sec-WebSocket-Key": key}, add=tuple(add))
    handshake = ServerHandshake(
        subprotocols=supported, extensions=[ServerPerMessageDeflateFactory()], extra_headers=extra
    )
    accepted = handshake.accept(req)
    assert accepted.head == serialize_response(accepted.response)
    assert accepted.response.headers["Sec-WebSocket-Accept"] == accept_key(key)


# ---------------------------------------------------------------- server: refused requests


def test_post_is_refused_with_405_and_allow_get() -> None:
    error = refused(request(method="POST"))
    assert error.status == 405
    assert error.headers.get_all("Allow") == ["GET"]


@pytest.mark.parametrize("version", ["1.0", "0.9"])
def test_http_before_1_1_is_refused_with_400(version: str) -> None:
    error = refused(request(version=version))
    assert error.status == 400
    assert b"HTTP/1.1" in error.body


@pytest.mark.parametrize("host", [None, "", "   "])
def test_missing_or_blank_host_is_refused_with_400(host: str | None) -> None:
    req = request(drop=("Host",)) if host is None else request(replace={"Host": host})
    error = refused(req)
    assert error.status == 400
    assert b"Host" in error.body


@pytest.mark.parametrize("value", [None, "h2c", "websockets", "web socket"])
def test_request_without_upgrade_websocket_is_refused(value: str | None) -> None:
    req = request(drop=("Upgrade",)) if value is None else request(replace={"Upgrade": value})
    error = refused(req)
    assert error.status == 426
    assert b"Upgrade" in error.body


@pytest.mark.parametrize("value", [None, "keep-alive", "close", "upgraded"])
def test_request_without_connection_upgrade_is_refused_with_400(value: str | None) -> None:
    req = request(drop=("Connection",)) if value is None else request(replace={"Connection": value})
    error = refused(req)
    assert error.status == 400
    assert b"Connection" in error.body


@pytest.mark.parametrize(
    "key",
    [
        base64.b64encode(bytes(15)).decode(),
        base64.b64encode(bytes(17)).decode(),
        "",
        "not base64!!!!!!!!!!!!==",
        "dGhlIHNhbXBsZSBub25jZQ",  # the RFC key without its padding
        "dGhlIHNhbXBsZSBub25jZQ==dGhl",
    ],
    ids=["15-bytes", "17-bytes", "empty", "not-base64", "no-padding", "trailing-junk"],
)
def test_key_that_is_not_base64_of_16_bytes_is_refused_with_400(key: str) -> None:
    error = refused(request(replace={"Sec-WebSocket-Key": key}))
    assert error.status == 400
    assert b"Sec-WebSocket-Key" in error.body


def test_missing_key_is_refused_with_400() -> None:
    error = refused(request(drop=("Sec-WebSocket-Key",)))
    assert error.status == 400
    assert b"Sec-WebSocket-Key" in error.body


def test_two_keys_are_refused_with_400() -> None:
    other = base64.b64encode(bytes(range(16))).decode()
    error = refused(request(add=(("Sec-WebSocket-Key", other),)))
    assert error.status == 400
    assert b"Sec-WebSocket-Key" in error.body


@pytest.mark.parametrize("version", [None, "8", "12", "14", "13, 8", "thirteen"])
def test_version_other_than_13_is_refused_with_426_listing_13(version: str | None) -> None:
    if version is None:
        req = request(drop=("Sec-WebSocket-Version",))
    else:
        req = request(replace={"Sec-WebSocket-Version": version})
    error = refused(req)
    assert error.status == 426
    assert error.headers.get_all("Sec-WebSocket-Version") == ["13"]
    assert b"Sec-WebSocket-Version" in error.body


@pytest.mark.parametrize(
    ("change", "ending"),
    [
        ({"replace": {"Sec-WebSocket-Version": "9" * 15000}}, "; this server speaks version 13"),
        ({"add": (("Sec-WebSocket-Protocol", "x" * 15000),)}, "; this server speaks chat"),
        ({"replace": {"Host": "h " * 7500}}, "h h '"),
    ],
    ids=["version", "subprotocol", "host"],
)
def test_refusal_quotes_at_most_512_characters_of_what_the_client_sent(
    change: dict, ending: str
) -> None:
    # The message goes into the response and the server's log line: a flood of 15 kB values must not
    # become a log as large as the flood. Its end, which says why, stays.
    server = ServerHandshake(subprotocols=["chat"])
    error = refused(request(**change), server)
    assert error.status in (400, 426)
    assert len(str(error)) <= 512
    assert " characters ...] " in str(error)
    assert str(error).endswith(ending)
    assert len(error.body) <= 600


def test_refusal_escapes_control_characters_of_what_the_client_sent() -> None:
    # One log line, without terminal escapes (C1's CSI, NEL) or line breaks, whatever the client sent.
    server = ServerHandshake(origins=["https://ok.example"])
    error = refused(request(add=(("Origin", "https://x\x85\x9b[2Jy"),)), server)
    assert error.status == 403
    assert "\\x85\\x9b[2J" in str(error)
    assert not any(0x80 <= ord(c) <= 0x9F or ord(c) < 0x20 for c in str(error))


def test_refusal_is_a_complete_http_response() -> None:
    error = refused(request(method="PUT"))
    data = serialize_response(Response(error.status, error.headers, error.body))
    assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in data
    assert b"Content-Length: %d\r\n" % len(error.body) in data
    assert data.endswith(b"\r\n\r\n" + error.body)


# ---------------------------------------------------------------- client


def test_client_request_is_the_rfc_example_given_the_rfc_key() -> None:
    handshake = ClientHandshake(
        "server.example.com",
        "/chat",
        subprotocols=["chat", "superchat"],
        extra_headers=[("Origin", "http://example.com")],
        key=RFC_KEY,
    )
    data = serialize_request(handshake.request)
    assert data.startswith(b"GET /chat HTTP/1.1\r\n")
    received = RequestReader().feed(data)
    assert received is not None
    assert check_request(received) == RFC_KEY
    for line in RFC_REQUEST.split(b"\r\n")[1:-2]:
        assert line + b"\r\n" in data


def test_client_uses_a_fresh_key_by_default() -> None:
    first, second = ClientHandshake("a", "/"), ClientHandshake("a", "/")
    assert first.key != second.key
    assert len(base64.b64decode(first.key, validate=True)) == 16


def test_client_accepts_a_valid_101_and_returns_no_subprotocol() -> None:
    assert ClientHandshake("a", "/", key=RFC_KEY).check_response(ok_response()) is None


def test_client_accepts_case_insensitive_upgrade_and_connection_tokens() -> None:
    response = Response(
        101,
        [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
            ("sec-websocket-accept", RFC_ACCEPT),
        ],
    )
    assert ClientHandshake("a", "/", key=RFC_KEY).check_response(response) is None


@pytest.mark.parametrize("status", [200, 301, 400, 403, 404, 426, 500])
def test_client_requires_101(status: int) -> None:
    response = Response(status, [("Content-Length", "3")], b"no!")
    with pytest.raises(InvalidStatus) as info:
        ClientHandshake("a", "/", key=RFC_KEY).check_response(response)
    assert info.value.status == status
    assert info.value.body == b"no!"


@pytest.mark.parametrize(
    "accept",
    [None, "", accept_key(base64.b64encode(bytes(16)).decode()), RFC_KEY, RFC_ACCEPT.lower()],
    ids=["missing", "empty", "other-key", "key-itself", "lower-case"],
)
def test_client_requires_the_right_accept(accept: str | None) -> None:
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if accept is not None:
        headers.append(("Sec-WebSocket-Accept", accept))
    with pytest.raises(InvalidHandshake):
        ClientHandshake("a", "/", key=RFC_KEY).check_response(Response(101, headers))


def test_client_refuses_two_accept_headers() -> None:
    response = ok_response()
    response.headers.add("Sec-WebSocket-Accept", RFC_ACCEPT)
    # Both right: the error says there are two, not that the value is wrong.
    with pytest.raises(InvalidHandshake, match=r"^2 Sec-WebSocket-Accept fields .*one is required"):
        ClientHandshake("a", "/", key=RFC_KEY).check_response(response)


@pytest.mark.parametrize("missing", ["Upgrade", "Connection"])
def test_client_requires_upgrade_and_connection(missing: str) -> None:
    response = ok_response()
    headers = [(n, v) for n, v in response.headers.items() if n != missing]
    with pytest.raises(InvalidHandshake):
        ClientHandshake("a", "/", key=RFC_KEY).check_response(Response(101, headers))


def test_client_requires_upgrade_to_be_websocket() -> None:
    response = ok_response()
    headers = [(n, "h2c" if n == "Upgrade" else v) for n, v in response.headers.items()]
    with pytest.raises(InvalidHandshake):
        ClientHandshake("a", "/", key=RFC_KEY).check_response(Response(101, headers))


def test_client_returns_the_chosen_subprotocol_when_offered() -> None:
    handshake = ClientHandshake("a", "/", subprotocols=["chat", "superchat"], key=RFC_KEY)
    assert handshake.check_response(ok_response(Sec_WebSocket_Protocol="superchat")) == "superchat"


@pytest.mark.parametrize("offered", [[], ["chat"]])
def test_client_refuses_a_subprotocol_it_did_not_offer(offered: list[str]) -> None:
    handshake = ClientHandshake("a", "/", subprotocols=offered, key=RFC_KEY)
    with pytest.raises(InvalidHandshake):
        handshake.check_response(ok_response(Sec_WebSocket_Protocol="mqtt"))


@pytest.mark.parametrize("value", ["", " ", ","])
def test_client_refuses_an_empty_subprotocol(value: str) -> None:
    # The field names one subprotocol (RFC 6455 §11.3.4); present but empty, it names none.
    handshake = ClientHandshake("a", "/", subprotocols=["chat"], key=RFC_KEY)
    with pytest.raises(InvalidHandshake, match="empty Sec-WebSocket-Protocol"):
        handshake.check_response(ok_response(Sec_WebSocket_Protocol=value))


@pytest.mark.parametrize(
    "value", ["chat,", ",chat", "chat, chat", "chat\u00a0", "Chat", "chat superchat"]
)
def test_client_refuses_a_subprotocol_field_that_is_not_one_offered_token(value: str) -> None:
    # RFC 6455 §4.1 (6): exactly one of the offered names (Node's ws refuses these too).
    handshake = ClientHandshake("a", "/", subprotocols=["chat", "superchat"], key=RFC_KEY)
    with pytest.raises(InvalidHandshake, match="which was not offered"):
        handshake.check_response(ok_response(Sec_WebSocket_Protocol=value))


def test_client_refuses_two_subprotocol_fields() -> None:
    handshake = ClientHandshake("a", "/", subprotocols=["chat"], key=RFC_KEY)
    response = ok_response()
    response.headers.add("Sec-WebSocket-Protocol", "chat")
    response.headers.add("Sec-WebSocket-Protocol", "chat")
    with pytest.raises(InvalidHandshake, match="more than one Sec-WebSocket-Protocol field"):
        handshake.check_response(response)


def test_client_accepts_the_chosen_subprotocol_with_white_space_around_it() -> None:
    handshake = ClientHandshake("a", "/", subprotocols=["chat"], key=RFC_KEY)
    assert handshake.check_response(ok_response(Sec_WebSocket_Protocol=" chat\t")) == "chat"


def test_client_refuses_more_than_one_subprotocol() -> None:
    handshake = ClientHandshake("a", "/", subprotocols=["chat", "superchat"], key=RFC_KEY)
    with pytest.raises(InvalidHandshake):
        handshake.check_response(ok_response(Sec_WebSocket_Protocol="chat, superchat"))


@pytest.mark.parametrize("value", ["", " ", ", ,"])
def test_an_empty_extensions_field_is_refused_on_both_sides(value: str) -> None:
    # RFC 6455 §9.1: Sec-WebSocket-Extensions is a list of one or more extensions.
    error = refused(
        request(add=(("Sec-WebSocket-Extensions", value),)),
        ServerHandshake(extensions=[ServerPerMessageDeflateFactory()]),
    )
    assert error.status == 400
    assert b"empty Sec-WebSocket-Extensions" in error.body
    handshake = ClientHandshake("a", "/", key=RFC_KEY)
    with pytest.raises(InvalidHandshake, match="empty Sec-WebSocket-Extensions"):
        handshake.check_response(ok_response(Sec_WebSocket_Extensions=value))


@pytest.mark.parametrize("extension", ["permessage-deflate", "x-webkit-deflate-frame"])
def test_client_refuses_an_extension_it_did_not_offer(extension: str) -> None:
    handshake = ClientHandshake("a", "/", key=RFC_KEY)
    with pytest.raises(InvalidHandshake):
        handshake.check_response(ok_response(Sec_WebSocket_Extensions=extension))


def test_client_and_server_complete_the_handshake_over_bytes() -> None:
    client = ClientHandshake("example.com:8080", "/chat?x=1", subprotocols=["v2", "v1"])
    request_bytes = serialize_request(client.request)
    reader = RequestReader()
    received = None
    for i in range(len(request_bytes)):
        received = reader.feed(request_bytes[i : i + 1])
    assert received is not None
    assert received.query == {"x": "1"}
    accepted = ServerHandshake(subprotocols=["v1"]).accept(received)
    response_bytes = serialize_response(accepted.response)
    response = ResponseReader(client.request).feed(response_bytes + b"\x81\x00")
    assert response is not None
    assert client.check_response(response) == "v1"


@pytest.mark.parametrize("value", ["h2c, websocket", "websocket, TLS/1.2"])
def test_client_fails_an_upgrade_naming_another_protocol_too(value: str) -> None:
    # RFC 6455 §4.1 (2): an Upgrade field that contains a value other than "websocket" fails.
    response = ok_response()
    headers = [(n, value if n == "Upgrade" else v) for n, v in response.headers.items()]
    with pytest.raises(InvalidHandshake, match="only 'websocket' may be named"):
        ClientHandshake("a", "/", key=RFC_KEY).check_response(Response(101, headers))
    # The same token twice, or in another case, names websocket only.
    for same in ["WebSocket", "websocket, websocket"]:
        headers = [(n, same if n == "Upgrade" else v) for n, v in response.headers.items()]
        ClientHandshake("a", "/", key=RFC_KEY).check_response(Response(101, headers))


@pytest.mark.parametrize("length", ["0", "00", " 0 "])
def test_server_accepts_a_content_length_of_zero_in_any_spelling(length: str) -> None:
    ServerHandshake().accept(request(add=(("Content-Length", length),)))


@pytest.mark.parametrize("length", ["1", "0x0", "-0", "٠"])
def test_server_refuses_a_content_length_that_is_not_zero(length: str) -> None:
    error = refused(request(add=(("Content-Length", length),)))
    assert error.status == 400


def test_server_reads_a_very_long_zero_content_length_without_int_conversion() -> None:
    # Python 3.11 refuses int() of more than 4300 digits: the zero check must not convert.
    ServerHandshake().accept(request(add=(("Content-Length", "0" * 5000),)))
