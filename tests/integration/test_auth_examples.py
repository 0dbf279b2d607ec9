"""The authentication examples of examples/auth/: token and cookie checks in process_request.

Each example module is loaded from its file and served on a free port with its own `handler` and
`process_request`, then driven by upwire clients and plain HTTP requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 3)

EXAMPLES = Path(__file__).parents[2] / "examples" / "auth"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"upwire_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def http_get(port: int, target: str) -> tuple[int, dict[str, str], str]:
    """A plain HTTP/1.1 GET; returns the status, the headers (lower-case names) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def token_example() -> ModuleType:
    return load("token_server")


@pytest.fixture(scope="module")
def cookie_example() -> ModuleType:
    return load("cookie_server")


async def test_token_in_the_authorization_header(
    start_server: StartServer, token_example: ModuleType
) -> None:
    server = await start_server(
        token_example.handler, process_request=token_example.process_request
    )
    headers = {"Authorization": "Bearer alice-token"}
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/", additional_headers=headers) as ws:
        assert await ws.recv() == "Hello alice!"
        await ws.send("hi")
        assert await ws.recv() == "alice: hi"


async def test_token_in_the_query_for_browsers(
    start_server: StartServer, token_example: ModuleType
) -> None:
    server = await start_server(
        token_example.handler, process_request=token_example.process_request
    )
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/?token=bob-token") as ws:
        assert await ws.recv() == "Hello bob!"


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/", {}),
        ("/?token=mallory", {}),
        ("/", {"Authorization": "Bearer wrong"}),
        ("/", {"Authorization": "Basic alice-token"}),
    ],
)
async def test_missing_or_wrong_token_gets_401(
    start_server: StartServer, token_example: ModuleType, target: str, headers: dict[str, str]
) -> None:
    reached: list[object] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        reached.append(ws)

    server = await start_server(handler, process_request=token_example.process_request)
    with pytest.raises(upwire.InvalidStatus) as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}{target}", additional_headers=headers)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="upwire example"'
    assert b"valid token is required" in caught.value.body
    assert reached == []


async def test_cookie_from_login_opens_the_websocket(
    start_server: StartServer, cookie_example: ModuleType
) -> None:
    server = await start_server(
        cookie_example.handler, process_request=cookie_example.process_request
    )
    status, headers, body = await http_get(server.port, "/login?user=alice")
    assert status == 200 and body == "Logged in as alice.\n"
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("session=alice.")
    async with upwire.connect(
        f"ws://127.0.0.1:{server.port}/ws",
        additional_headers={"Cookie": f"theme=dark; {cookie}"},
        origin=f"http://127.0.0.1:{server.port}",  # the page came from this server
    ) as ws:
        assert await ws.recv() == "Hello alice!"
        await ws.send("hi")
        assert await ws.recv() == "alice: hi"


@pytest.mark.parametrize(
    ("cookie", "origin", "why"),
    [
        (None, "http://127.0.0.1:{port}", b"Log in first"),
        ("session=alice.0000", "http://127.0.0.1:{port}", b"Log in first"),
        ("session=mallory", "http://127.0.0.1:{port}", b"Log in first"),
        ("valid", "https://evil.example", b"This origin may not"),
        ("valid", "http://127.0.0.1:1", b"This origin may not"),  # another port: another origin
        ("valid", None, b"This origin may not"),
    ],
)
async def test_websocket_without_a_valid_cookie_or_origin_gets_403(
    start_server: StartServer,
    cookie_example: ModuleType,
    cookie: str | None,
    origin: str | None,
    why: bytes,
) -> None:
    server = await start_server(
        cookie_example.handler, process_request=cookie_example.process_request
    )
    if cookie == "valid":
        cookie = f"session={cookie_example.sign('alice')}"
    headers = {} if cookie is None else {"Cookie": cookie}
    if origin is not None:
        origin = origin.format(port=server.port)
    with pytest.raises(upwire.InvalidStatus) as caught:
        await upwire.connect(
            f"ws://127.0.0.1:{server.port}/ws", additional_headers=headers, origin=origin
        )
    assert caught.value.status == 403
    assert why in caught.value.body


async def test_cookie_example_login_refuses_odd_names(
    start_server: StartServer, cookie_example: ModuleType
) -> None:
    server = await start_server(
        cookie_example.handler, process_request=cookie_example.process_request
    )
    for name in ("a%3Bb", "%E7%94%A8%E6%88%B7"):  # a separator; letters that are not Latin-1
        status, headers, _ = await http_get(server.port, f"/login?user={name}")
        assert status == 400 and "set-cookie" not in headers
    assert (await http_get(server.port, "/elsewhere"))[0] == 404
