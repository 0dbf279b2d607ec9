"""What the client is given to build its request: URIs, subprotocols, headers, redirect Locations, no_proxy.

Everything here is checked before a connection is opened (the socket-level tests are in
`tests/integration/test_client_inputs.py`).
"""

from __future__ import annotations

from typing import Any

import pytest

from upwire.client import parse_uri
from upwire.exceptions import InvalidRedirect, InvalidStatus, InvalidURI, UsageError
from upwire.protocol.handshake import ClientHandshake, check_subprotocols
from upwire.protocol.http import Headers
from upwire.proxy import Proxy, proxy_bypassed, select_proxy
from upwire.redirects import RedirectChain, headers_for_redirect

# ---------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("ws://h/a b", "/a%20b"),
        ("ws://h/\u20ac", "/%E2%82%AC"),
        ("ws://h/caf\u00e9?q=a b", "/caf%C3%A9?q=a%20b"),
        ("ws://h/%20already?x=%41", "/%20already?x=%41"),
        ("ws://h/a\x00b", "/a%00b"),
    ],
)
def test_spaces_controls_and_non_ascii_in_the_target_are_percent_encoded(
    uri: str, target: str
) -> None:
    assert parse_uri(uri).target == target


def test_a_non_ascii_host_name_is_used_in_its_idna_form() -> None:
    assert parse_uri("ws://b\u00fccher.example/").host == "xn--bcher-kva.example"


@pytest.mark.parametrize("host", ["a..example", "x" * 64 + ".example"])
def test_a_host_name_that_dns_refuses_still_parses(host: str) -> None:
    # With unix_socket= or sock= it only fills the Host field (connect refuses it when it resolves it).
    assert parse_uri(f"ws://{host}/").host == host


@pytest.mark.parametrize("host", ["example.com.", "127.0.0.1", "[::1]", "x" * 63 + ".example"])
def test_other_host_names_pass_as_they_are(host: str) -> None:
    assert parse_uri(f"ws://{host}:81/").host == host.strip("[]")


@pytest.mark.parametrize("uri", ["ws://127.0.0.1:0/", "wss://user:secret@h:0/"])
def test_port_0_is_an_invalid_uri(uri: str) -> None:
    with pytest.raises(InvalidURI, match="port 0") as caught:
        parse_uri(uri)
    assert "secret" not in str(caught.value)


def test_an_empty_port_is_the_default_port() -> None:
    assert parse_uri("ws://h:/").port == 80


# ---------------------------------------------------------------- subprotocols


@pytest.mark.parametrize("subprotocols", ["chat", b"chat"])
def test_subprotocols_as_one_string_is_a_type_error(subprotocols: Any) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        check_subprotocols(subprotocols)
    with pytest.raises(TypeError):
        ClientHandshake("a", "/", subprotocols=subprotocols)


@pytest.mark.parametrize(
    ("subprotocols", "why"),
    [
        (["a, b"], "not a token"),
        (["a b"], "not a token"),
        ([""], "not a token"),
        (["chat", "v2", "chat"], "'chat' is listed twice"),
    ],
)
def test_subprotocols_must_be_unique_tokens(subprotocols: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ClientHandshake("a", "/", subprotocols=subprotocols)


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "headers",
    [
        {"X A": "1"},
        {"X-A: b": "1"},
        {"": "1"},
        {"X-A": "1\r\nX-Injected: 2"},
        {"X-A": " padded "},
        {"X-\u00e9": "1"},
        {"X-A": "\u20ac"},
        [("Host", "a"), ("Host", "b")],
    ],
)
def test_header_fields_http_cannot_carry_are_usage_errors(headers: Any) -> None:
    with pytest.raises(UsageError):
        ClientHandshake("a", "/", extra_headers=headers)


@pytest.mark.parametrize(
    ("name", "instead"),
    [
        ("Sec-WebSocket-Key", "fresh"),
        ("sec-websocket-version", "13"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Protocol", "use subprotocols="),
        ("Sec-WebSocket-Extensions", "use extensions="),
    ],
)
def test_fields_the_handshake_sets_are_refused_in_extra_headers(name: str, instead: str) -> None:
    with pytest.raises(UsageError, match=f"the {name} header is set by the opening handshake"):
        ClientHandshake("a", "/", extra_headers={name: "x"})
    with pytest.raises(UsageError, match=instead):
        ClientHandshake("a", "/", extra_headers={name: "x"})


def test_proxy_credentials_in_extra_headers_are_refused() -> None:
    # They would be sent to the server (through the proxy's tunnel), never to the proxy.
    with pytest.raises(UsageError, match="would go to the server, not to the proxy"):
        ClientHandshake("a", "/", extra_headers={"proxy-authorization": "Basic c2VjcmV0"})


def test_a_host_in_extra_headers_replaces_the_one_from_the_uri() -> None:
    handshake = ClientHandshake("10.0.0.5:8080", "/", extra_headers={"host": "api.example"})
    assert handshake.request.headers.get_all("Host") == ["api.example"]
    assert b"\r\nhost: api.example\r\n" in handshake.head
    assert b"10.0.0.5" not in handshake.head


def test_a_host_given_by_the_caller_does_not_follow_a_redirect_to_another_origin() -> None:
    headers = Headers([("Host", "api.example"), ("X-Trace", "1")])
    assert headers_for_redirect(headers, "ws://a:1/", "ws://a:1/b") is headers
    assert headers_for_redirect(headers, "ws://a:1/", "ws://b:1/").items() == [("X-Trace", "1")]


# ---------------------------------------------------------------- redirects


def redirect(location: str) -> InvalidStatus:
    return InvalidStatus("redirect", 302, [("Location", location)], b"")


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("ws://h:99999/", "Port out of range"),
        ("ws://[::1/", "Invalid IPv6 URL"),
        ("ws://h:0/", "whose port is 0"),
        ("http://u:secret@h:0/", "whose port is 0"),
    ],
)
def test_a_location_with_a_bad_port_is_an_invalid_redirect(location: str, why: str) -> None:
    with pytest.raises(InvalidRedirect, match=why) as caught:
        RedirectChain("ws://a/", 10).next_uri(redirect(location))
    assert caught.value.status == 302
    assert "secret" not in str(caught.value)


def test_redirect_errors_never_show_credentials_from_a_location() -> None:
    chain = RedirectChain("ws://a/", 10)
    chain.next_uri(redirect("ws://bob:s3cret@a/u"))
    chain.next_uri(redirect("/v"))
    with pytest.raises(InvalidRedirect, match="redirect loop") as looped:
        chain.next_uri(redirect("ws://bob:s3cret@a/u"))
    assert str(looped.value) == "redirect loop: ws://***@a/u -> ws://***@a/v -> ws://***@a/u"
    secure = RedirectChain("wss://a/", 10)
    with pytest.raises(InvalidRedirect, match="drop TLS") as dropped:
        secure.next_uri(redirect("ws://bob:s3cret@b/"))
    assert "s3cret" not in str(dropped.value) and "bob" not in str(dropped.value)


# ---------------------------------------------------------------- no_proxy


@pytest.mark.parametrize("entry", ["[::1]:x", "[::1]:", "[::1", "[::1]x"])
def test_a_malformed_no_proxy_entry_is_skipped_and_the_proxy_still_used(entry: str) -> None:
    assert proxy_bypassed("::1", 443, entry) is False
    assert proxy_bypassed("example.com", 443, f"{entry}, example.com") is True
    environ = {"https_proxy": "http://proxy:3128", "no_proxy": entry}
    assert select_proxy(True, "::1", 443, environ=environ) == Proxy("proxy", 3128)
