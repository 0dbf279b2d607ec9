"""Redirects of the opening handshake: upwire servers whose process_request answers 3xx, and the client.

The client follows 301, 302, 303, 307 and 308 (relative or absolute Location, http(s):// meaning ws(s)://)
up to `max_redirects`, never from wss:// to ws://, and reports loops and refusals with `InvalidRedirect`.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable

import pytest
import trustme

import upwire
from upwire.redirects import RedirectChain

from .helpers import TEST_TIMEOUT_S, StartServer, tls_contexts

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 3)

Routes = dict[str, tuple[int, str]]


def redirecting(
    routes: Routes, seen: list[str] | None = None
) -> Callable[..., upwire.Response | None]:
    """A process_request hook answering `path -> (status, location)` and letting other paths upgrade."""

    def process_request(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        if seen is not None:
            seen.append(request.target)
        if request.path in routes:
            status, location = routes[request.path]
            return upwire.Response(status, {"Location": location}, f"moved to {location}\n")
        return None

    return process_request


async def whoami(ws: upwire.ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(f"{ws.request.target} auth={ws.request.headers.get('Authorization')}")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_client_follows_a_redirect(start_server: StartServer, status: int) -> None:
    server = await start_server(whoami, process_request=redirecting({"/old": (status, "/new?x=1")}))
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/old") as ws:
        assert await ws.recv() == "/new?x=1 auth=None"
        assert ws.request is not None and ws.request.target == "/new?x=1"


async def test_client_follows_relative_and_absolute_locations_across_servers(
    start_server: StartServer,
) -> None:
    final = await start_server(whoami)
    hops = {
        "/a": (301, "b"),  # relative to /a: /b
        "/b": (302, "../c/d?q"),
        "/c/d": (307, f"ws://127.0.0.1:{final.port}/end"),
    }
    seen: list[str] = []
    first = await start_server(whoami, process_request=redirecting(hops, seen))
    async with upwire.connect(f"ws://127.0.0.1:{first.port}/a") as ws:
        assert await ws.recv() == "/end auth=None"
    assert seen == ["/a", "/b", "/c/d?q"]


@pytest.mark.parametrize(
    ("sent", "requested"),
    [
        ("/caf\u00c3\u00a9", "/caf%C3%A9"),  # the bytes of "/café" in UTF-8, as servers send it
        ("/caf\u00e9", "/caf%E9"),  # a byte that is not UTF-8: percent-encoded as it is
        ("/caf%C3%A9", "/caf%C3%A9"),  # already encoded: unchanged
    ],
    ids=["utf-8", "latin-1", "encoded"],
)
async def test_a_non_ascii_location_is_requested_with_its_own_bytes(
    start_server: StartServer, sent: str, requested: str
) -> None:
    # Header values reach the client as Latin-1 characters, one per byte; encoding those again as UTF-8
    # asked for "/caf%C3%83%C2%A9", a path the server never named.
    server = await start_server(whoami, process_request=redirecting({"/old": (302, sent)}))
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/old") as ws:
        assert await ws.recv() == f"{requested} auth=None"


async def test_http_location_means_ws(start_server: StartServer) -> None:
    final = await start_server(whoami)
    first = await start_server(
        whoami, process_request=redirecting({"/": (308, f"http://127.0.0.1:{final.port}/h")})
    )
    async with upwire.connect(f"ws://127.0.0.1:{first.port}/") as ws:
        assert await ws.recv() == "/h auth=None"


async def test_credentials_are_not_sent_to_another_origin(start_server: StartServer) -> None:
    final = await start_server(whoami)
    first = await start_server(
        whoami,
        process_request=redirecting(
            {"/same": (302, "/there"), "/away": (302, f"ws://127.0.0.1:{final.port}/x")}
        ),
    )
    headers = {"Authorization": "Bearer secret"}
    async with upwire.connect(
        f"ws://127.0.0.1:{first.port}/same", additional_headers=headers
    ) as ws:
        assert await ws.recv() == "/there auth=Bearer secret"
    async with upwire.connect(
        f"ws://127.0.0.1:{first.port}/away", additional_headers=headers
    ) as ws:
        assert await ws.recv() == "/x auth=None"


async def test_credentials_in_the_uri_are_sent_as_basic_authorization(
    start_server: StartServer,
) -> None:
    final = await start_server(whoami)
    first = await start_server(
        whoami,
        process_request=redirecting(
            {"/same": (302, "/there"), "/away": (302, f"ws://127.0.0.1:{final.port}/x")}
        ),
    )
    # Percent-decoded first (RFC 3986 §3.2.1): "al@ice" and "p:ss".
    basic = "Basic " + base64.b64encode(b"al@ice:p:ss").decode()
    async with upwire.connect(f"ws://al%40ice:p%3Ass@127.0.0.1:{first.port}/h") as ws:
        assert await ws.recv() == f"/h auth={basic}"
    # Like an Authorization header given by the caller: kept to the same origin only.
    async with upwire.connect(f"ws://al%40ice:p%3Ass@127.0.0.1:{first.port}/same") as ws:
        assert await ws.recv() == f"/there auth={basic}"
    async with upwire.connect(f"ws://al%40ice:p%3Ass@127.0.0.1:{first.port}/away") as ws:
        assert await ws.recv() == "/x auth=None"
    # An Authorization header given by the caller wins.
    async with upwire.connect(
        f"ws://u:p@127.0.0.1:{first.port}/h", additional_headers={"Authorization": "Bearer t"}
    ) as ws:
        assert await ws.recv() == "/h auth=Bearer t"


async def test_credentials_in_the_uri_never_appear_in_errors(start_server: StartServer) -> None:
    with pytest.raises(upwire.InvalidURI) as caught:
        await upwire.connect("ws://user:secret@127.0.0.1:port/")
    assert "secret" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)
    server = await start_server(
        whoami, process_request=redirecting({"/a": (302, "/b"), "/b": (301, "/a")})
    )
    with pytest.raises(upwire.InvalidRedirect) as looped:
        await upwire.connect(f"ws://user:secret@127.0.0.1:{server.port}/a")
    assert "secret" not in str(looped.value)
    assert "user" not in str(looped.value)


async def test_redirect_loop_is_a_clear_error(start_server: StartServer) -> None:
    server = await start_server(
        whoami, process_request=redirecting({"/a": (302, "/b"), "/b": (301, "/a")})
    )
    with pytest.raises(upwire.InvalidRedirect, match="redirect loop") as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}/a")
    port = server.port
    assert str(caught.value) == (
        f"redirect loop: ws://127.0.0.1:{port}/a -> ws://127.0.0.1:{port}/b -> ws://127.0.0.1:{port}/a"
    )
    assert caught.value.status == 301
    assert isinstance(caught.value, upwire.InvalidStatus)


async def test_more_than_max_redirects_is_an_error(start_server: StartServer) -> None:
    routes: Routes = {f"/{i}": (307, f"/{i + 1}") for i in range(20)}
    seen: list[str] = []
    server = await start_server(whoami, process_request=redirecting(routes, seen))
    with pytest.raises(upwire.InvalidRedirect, match="more than max_redirects=10 redirects"):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/0")
    assert len(seen) == 11
    seen.clear()
    with pytest.raises(upwire.InvalidRedirect, match="max_redirects=3"):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/0", max_redirects=3)
    assert len(seen) == 4
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/17", max_redirects=3) as ws:
        assert await ws.recv() == "/20 auth=None"


async def test_max_redirects_zero_reports_the_redirect_itself(start_server: StartServer) -> None:
    server = await start_server(whoami, process_request=redirecting({"/": (301, "/x")}))
    with pytest.raises(upwire.InvalidStatus) as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}/", max_redirects=0)
    assert type(caught.value) is upwire.InvalidStatus
    assert caught.value.status == 301
    assert caught.value.headers.get_all("Location") == ["/x"]


async def test_redirect_without_location_is_an_error(start_server: StartServer) -> None:
    def no_location(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response:
        return upwire.Response(302, body="nowhere\n")

    server = await start_server(whoami, process_request=no_location)
    with pytest.raises(upwire.InvalidRedirect, match="without a single Location"):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/")


async def test_redirect_to_another_scheme_is_an_error(start_server: StartServer) -> None:
    server = await start_server(whoami, process_request=redirecting({"/": (302, "ftp://x/")}))
    with pytest.raises(upwire.InvalidRedirect, match="not a ws:// or wss:// URI"):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/")


async def test_wss_is_never_redirected_to_ws(start_server: StartServer) -> None:
    server_context, client_context = tls_contexts("127.0.0.1")
    plain = await start_server(whoami)
    secure = await start_server(
        whoami,
        ssl=server_context,
        process_request=redirecting(
            {"/down": (302, f"ws://127.0.0.1:{plain.port}/"), "/stay": (302, "/here")}
        ),
    )
    # Schemes are case-insensitive (RFC 3986 §3.1): WSS:// is wss:// here too.
    for scheme in ("wss", "WSS", "Wss"):
        with pytest.raises(upwire.InvalidRedirect, match="would drop TLS"):
            await upwire.connect(f"{scheme}://127.0.0.1:{secure.port}/down", ssl=client_context)
    async with upwire.connect(f"wss://127.0.0.1:{secure.port}/stay", ssl=client_context) as ws:
        assert await ws.recv() == "/here auth=None"


async def test_ws_may_be_redirected_to_wss(start_server: StartServer) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    secure = await start_server(whoami, ssl=server_context)
    plain = await start_server(
        whoami, process_request=redirecting({"/": (301, f"wss://127.0.0.1:{secure.port}/up")})
    )
    # The default context does not trust the test CA: the redirect was followed, with verification.
    with pytest.raises(upwire.InvalidCertificate):
        await upwire.connect(f"ws://127.0.0.1:{plain.port}/")


def test_negative_max_redirects_is_refused() -> None:
    with pytest.raises(ValueError, match="max_redirects must be 0 or more"):
        upwire.connect("ws://localhost/", max_redirects=-1)
    with pytest.raises(ValueError):
        RedirectChain("ws://localhost/", -1)
