"""The client through an HTTP proxy: a real tinyproxy run by the test, and the choice of proxy.

tinyproxy logs each CONNECT it handles, which shows a connection really went through it. TLS to the server
(wss://) runs inside the tunnel, with the certificate checked against the server's name.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

import upwire
from upwire.proxy import Proxy, parse_proxy, proxy_bypassed, select_proxy

from .daemons import Daemon, free_port, remove, start_tinyproxy
from .helpers import TEST_TIMEOUT_S, StartServer, tls_contexts

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 4)

StartProxy = Callable[..., Awaitable[Daemon]]
USER, PASSWORD = "upwire", "s3cret-pass"


@pytest_asyncio.fixture
async def tinyproxy() -> AsyncIterator[StartProxy]:
    """`proxy = await tinyproxy(connect_ports, basic_auth=None)`; stopped by PID at teardown."""
    started: list[Daemon] = []

    async def start(connect_ports: list[int], basic_auth: tuple[str, str] | None = None) -> Daemon:
        daemon = await start_tinyproxy(connect_ports, basic_auth)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()
        remove(daemon)


def tunnels(proxy: Daemon, port: int) -> int:
    """How many CONNECT requests to 127.0.0.1:port the proxy logged."""
    return proxy.log.count(f"CONNECT 127.0.0.1:{port} ")


async def test_ws_through_proxy_option(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: Any
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port])
    async with upwire.connect(
        f"ws://127.0.0.1:{server.port}/", proxy=f"http://127.0.0.1:{proxy.port}"
    ) as ws:
        await ws.send("through the tunnel")
        assert await ws.recv() == "through the tunnel"
        await ws.send(b"\x01" * 200_000)
        assert await ws.recv() == b"\x01" * 200_000
    assert tunnels(proxy, server.port) == 1


async def test_ws_uses_http_proxy_from_the_environment(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: pytest.MonkeyPatch
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port])
    # Only the upper-case name, and https_proxy pointing nowhere: ws:// must use HTTP_PROXY.
    no_proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    no_proxy_environment.setenv("https_proxy", f"http://127.0.0.1:{free_port()}")
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("env")
        assert await ws.recv() == "env"
    assert tunnels(proxy, server.port) == 1

    # no_proxy covers the host: direct connection, the proxy sees nothing more.
    no_proxy_environment.setenv("no_proxy", "localhost,127.0.0.0/8")
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("direct")
        assert await ws.recv() == "direct"
    # proxy=None ignores the environment too.
    no_proxy_environment.delenv("no_proxy")
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/", proxy=None) as ws:
        await ws.send("direct")
        assert await ws.recv() == "direct"
    assert tunnels(proxy, server.port) == 1


async def test_wss_goes_through_https_proxy_with_tls_inside_the_tunnel(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: pytest.MonkeyPatch
) -> None:
    server_context, client_context = tls_contexts()
    server = await start_server(ssl=server_context)
    proxy = await tinyproxy([server.port])
    no_proxy_environment.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    no_proxy_environment.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    async with upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context) as ws:
        await ws.send("secret through the proxy")
        assert await ws.recv() == "secret through the proxy"
        assert ws.transport is not None
        assert ws.transport.get_extra_info("ssl_object") is not None
    assert proxy.log.count(f"CONNECT localhost:{server.port} ") == 1
    # The certificate is still checked against the server's name, not the proxy's.
    with pytest.raises(upwire.InvalidCertificate):
        await upwire.connect(f"wss://localhost:{server.port}/")


async def test_basic_auth_credentials_from_the_proxy_url(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: Any
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port], basic_auth=(USER, PASSWORD))
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}"
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/", proxy=url) as ws:
        await ws.send("authenticated")
        assert await ws.recv() == "authenticated"
    assert tunnels(proxy, server.port) == 1


async def test_missing_proxy_credentials_are_an_authentication_error(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: Any
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port], basic_auth=(USER, PASSWORD))
    with pytest.raises(upwire.ProxyAuthenticationError) as caught:
        await upwire.connect(
            f"ws://127.0.0.1:{server.port}/", proxy=f"http://127.0.0.1:{proxy.port}"
        )
    assert caught.value.status == 407
    assert "requires credentials" in str(caught.value)
    assert f"http://127.0.0.1:{proxy.port}" in str(caught.value)


async def test_wrong_proxy_credentials_are_an_authentication_error(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: Any
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port], basic_auth=(USER, PASSWORD))
    url = f"http://{USER}:wrong@127.0.0.1:{proxy.port}"
    with pytest.raises(upwire.ProxyAuthenticationError) as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}/", proxy=url)
    # tinyproxy 1.11 answers wrong credentials with 401 (see PEERS.md); both mean the same here.
    assert caught.value.status in (401, 407)
    assert "refused the credentials" in str(caught.value)
    assert "wrong" not in str(caught.value)  # the password never appears in messages


async def test_proxy_refusing_the_port_is_a_proxy_error(
    start_server: StartServer, tinyproxy: StartProxy, no_proxy_environment: Any
) -> None:
    server = await start_server()
    proxy = await tinyproxy([server.port + 1 if server.port < 65535 else server.port - 1])
    with pytest.raises(upwire.ProxyError) as caught:
        await upwire.connect(
            f"ws://127.0.0.1:{server.port}/", proxy=f"http://127.0.0.1:{proxy.port}"
        )
    assert type(caught.value) is upwire.ProxyError
    assert caught.value.status == 403
    assert f"refused to open a tunnel to 127.0.0.1:{server.port}" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            b"407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n",
            "requires credentials",
        ),
        (b"403 Forbidden\r\nConnection: keep-alive\r\n", "refused to open a tunnel"),
    ],
    ids=["407", "403"],
)
async def test_a_refusal_without_a_length_on_a_connection_kept_open_is_reported_at_once(
    answer: bytes, error: str, no_proxy_environment: Any
) -> None:
    # Without Content-Length the body lasts until the proxy closes, which this one does not: the status
    # is what the client needs (it waited for open_timeout, then raised TimeoutError).
    held: list[asyncio.StreamWriter] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + answer + b"\r\nnot today\n")
        held.append(writer)

    proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        with pytest.raises(upwire.ProxyError, match=error) as caught:
            await upwire.connect(
                "ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{port}", open_timeout=TEST_TIMEOUT_S
            )
        assert caught.value.status == int(answer[:3])
        assert caught.value.body == b"not today\n"
    finally:
        for writer in held:
            writer.close()
        proxy.close()
        await proxy.wait_closed()


@pytest.mark.parametrize(
    ("challenges", "hint"),
    [
        ([b"Digest realm=x, nonce=1"], "it asks for digest, and only Basic is supported"),
        ([b"Negotiate", b"Digest realm=x"], "it asks for digest, negotiate, and only Basic"),
        ([b"Digest realm=x", b'Basic realm="x"'], "put them in the proxy URL"),
        ([], "put them in the proxy URL"),
    ],
)
async def test_a_proxy_asking_for_another_scheme_than_basic_says_so(
    challenges: list[bytes], hint: str, no_proxy_environment: Any
) -> None:
    async def challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        fields = b"".join(b"Proxy-Authenticate: " + c + b"\r\n" for c in challenges)
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n" + fields)
        writer.write(b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(challenge, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        with pytest.raises(upwire.ProxyAuthenticationError, match=hint):
            await upwire.connect("ws://127.0.0.1:9/", proxy=f"http://u:p@127.0.0.1:{port}")
    finally:
        proxy.close()
        await proxy.wait_closed()


async def test_unreachable_proxy_is_a_proxy_error(no_proxy_environment: Any) -> None:
    port = free_port()
    with pytest.raises(
        upwire.ProxyError, match=f"cannot connect to the proxy http://127.0.0.1:{port}"
    ):
        await upwire.connect("ws://127.0.0.1:1/", proxy=f"http://127.0.0.1:{port}")


# ------------------------------------------------------------------ choosing the proxy (no network)


def test_parse_proxy_url_with_percent_encoded_credentials() -> None:
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.example:3128")
    assert (proxy.host, proxy.port) == ("proxy.example", 3128)
    assert proxy.authorization == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert proxy.url == "http://proxy.example:3128"
    assert parse_proxy("proxy.example") == Proxy("proxy.example", 80)
    assert parse_proxy("http://[::1]:8080").url == "http://[::1]:8080"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://proxy:443", "only http:// proxies"),
        ("socks5://proxy:1080", "only http:// proxies"),
        ("http://:3128", "no host"),
        ("http://proxy:99999", "invalid proxy URL"),
        ("http://proxy:0", "port 0"),
        ("http://alice:s3cret@proxy:99999", "invalid proxy URL"),
        ("https://alice:s3cret@proxy", "only http:// proxies"),
        ("", "empty proxy URL"),  # not "invalid proxy URL 'http://'", a URL never written
        (" ", "empty proxy URL"),
    ],
)
def test_bad_proxy_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_proxy(url)
    assert "s3cret" not in str(caught.value)


def test_bad_proxy_url_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ValueError, match="from the https_proxy environment variable"):
        select_proxy(True, "example.com", 443, environ={"HTTPS_PROXY": "socks5://x:1"})


def test_proxy_option_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="proxy must be a URL string"):
        upwire.connect("ws://example.com/", proxy=3128)  # type: ignore[arg-type]


def test_scheme_chooses_the_variable_and_lower_case_wins() -> None:
    environ = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2", "HTTPS_PROXY": "s:3"}
    assert select_proxy(False, "example.com", 80, environ=environ) == Proxy("lower", 2)
    assert select_proxy(True, "example.com", 443, environ=environ) == Proxy("s", 3)
    assert select_proxy(True, "example.com", 443, environ={"http_proxy": "h:1"}) is None
    assert select_proxy(False, "example.com", 80, environ={"http_proxy": ""}) is None
    assert select_proxy(False, "example.com", 80, environ={"http_proxy": " "}) is None  # blank
    # Set but empty, the lower-case name still wins: `http_proxy= command` turns the proxy off (curl, urllib).
    both = {"http_proxy": "", "HTTP_PROXY": "http://upper:1"}
    assert select_proxy(False, "example.com", 80, environ=both) is None
    bypass = {"http_proxy": "h:1", "no_proxy": "", "NO_PROXY": "*"}
    assert select_proxy(False, "example.com", 80, environ=bypass) == Proxy("h", 1)
    assert select_proxy(False, "example.com", 80, environ={"HTTP_PROXY": "u:1"}) == Proxy("u", 1)
    assert select_proxy(False, "example.com", 80, None, environ=environ) is None
    assert select_proxy(False, "example.com", 80, False, environ=environ) is None
    # An explicit URL is used even for hosts that no_proxy covers.
    assert select_proxy(False, "example.com", 80, "p:9", environ={"no_proxy": "*"}) == Proxy("p", 9)


def test_under_cgi_an_upper_case_http_proxy_is_not_trusted() -> None:
    # "httpoxy": a CGI request's "Proxy: evil" header arrives as HTTP_PROXY.
    cgi = {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://evil:1"}
    assert select_proxy(False, "example.com", 80, environ=cgi) is None
    assert select_proxy(False, "example.com", 80, environ={**cgi, "http_proxy": "ok:2"}) == Proxy(
        "ok", 2
    )
    assert select_proxy(False, "example.com", 80, environ={"HTTP_PROXY": "up:3"}) == Proxy("up", 3)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("example.com", 80, "", False),
        ("example.com", 80, "*", True),
        ("example.com", 80, "example.com", True),
        ("api.example.com", 80, "example.com", True),
        ("api.example.com", 80, ".example.com", True),
        ("api.example.com", 80, "*.example.com", True),
        ("badexample.com", 80, "example.com", False),
        ("example.com", 80, "other.org, example.com", True),
        ("example.com", 80, "other.org example.com", True),
        ("EXAMPLE.com", 80, "example.COM", True),
        ("example.com", 8080, "example.com:8080", True),
        ("example.com", 80, "example.com:8080", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("::1", 80, "::1", True),
        ("::1", 80, "[::1]:80", True),
        ("::1", 81, "[::1]:80", False),
        ("127.0.0.1", 80, "localhost", False),
    ],
)
def test_no_proxy_entries(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert proxy_bypassed(host, port, no_proxy) is bypassed
    environ = {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    chosen = select_proxy(False, host, port, environ=environ)
    assert (chosen is None) is bypassed
