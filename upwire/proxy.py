"""HTTP proxies for the client: which proxy a connection goes through, and the CONNECT tunnel.

Owns: choosing the proxy (the `proxy=` option of `connect`, else `http_proxy`/`https_proxy`/`no_proxy`
from the environment, lower- or upper-case), opening a TCP connection to it and asking it for a tunnel to
the server with CONNECT (RFC 9110 §9.3.6), with Basic credentials taken from the proxy URL (RFC 9110 §11.7.1,
RFC 7617). The result is a connected socket that the client uses as if it were connected to the server
itself, so TLS to the server (wss://) runs end to end through the tunnel.

Must not know: WebSocket rules. HTTP bytes are read and written by `protocol.http`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from upwire.exceptions import InvalidHandshake, ProxyAuthenticationError, ProxyError
from upwire.protocol.http import (
    Headers,
    Request,
    ResponseReader,
    basic_authorization,
    redact_uri,
    serialize_request,
)

__all__ = ["Proxy", "ProxyOption", "open_tunnel", "parse_proxy", "proxy_bypassed", "select_proxy"]

# `connect(proxy=...)`: True (the default) reads the environment, a URL string names the proxy, and None or
# False connects directly.
ProxyOption = str | bool | None

# The proxy's answer to CONNECT is small; a larger head is not a proxy we should trust with the tunnel.
MAX_PROXY_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy to tunnel through.

    Attributes:
        host: the proxy's host name or IP address.
        port: the proxy's TCP port.
        authorization: the Proxy-Authorization header value ("Basic ..."), or None without credentials.
    """

    host: str
    port: int
    authorization: str | None = None

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (for messages and logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """Parse a proxy URL: `http://[user:password@]host[:port]` (a URL without a scheme means http://).

    The user name and password are percent-decoded, so `%40` stands for "@" and `%3A` for ":".

    Raises:
        ValueError: for another scheme (https:// and socks proxies are not supported), no host, or a bad port.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty proxy URL: pass None to connect directly")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid proxy URL {redact_uri(text)!r}: {exc}") from None
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"invalid proxy URL {redact_uri(text)!r}: only http:// proxies are supported "
            f"(not {parts.scheme}://)"
        )
    if not parts.hostname:
        raise ValueError(f"invalid proxy URL {redact_uri(text)!r}: no host")
    if port == 0:
        raise ValueError(f"invalid proxy URL {redact_uri(text)!r}: port 0")
    return Proxy(parts.hostname, 80 if port is None else port, basic_authorization(parts))


def _environment(name: str, environ: Mapping[str, str]) -> str:
    # The lower-case name wins when it is set, even empty (as for curl and Python's urllib:
    # `http_proxy= command` turns the proxy off for one command); "" means none.
    lower = name.lower()
    if lower in environ:
        return environ[lower]
    upper = name.upper()
    if upper == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
        # Under CGI a request's "Proxy:" header arrives as HTTP_PROXY ("httpoxy"): only the lower-case
        # name can be trusted there, as in Python's urllib.
        return ""
    return environ.get(upper) or ""


def proxy_bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Tell whether `no_proxy` says to connect to `host:port` directly.

    `no_proxy` is a comma- or space-separated list of: `*` (every host); a domain, which also covers its
    subdomains (`example.com`, `.example.com` and `*.example.com` are the same); an IP address or network
    (`10.0.0.0/8`, `::1`); any of these with `:port` to bypass only that port.
    """
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.startswith("["):  # [v6]:port or [v6]
            address_text, bracket, tail = entry[1:].partition("]")
            if not bracket or (tail and not (tail[0] == ":" and tail[1:].isdigit())):
                continue  # a malformed entry covers nothing (as in curl), so the proxy is still used
            entry, entry_port = address_text, int(tail[1:]) if tail else None
        elif entry.count(":") == 1:  # name:port or v4:port (a bare IPv6 address has several colons)
            name, _, port_text = entry.partition(":")
            if port_text.isdigit():
                entry, entry_port = name, int(port_text)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.removeprefix("*").strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def select_proxy(
    secure: bool,
    host: str,
    port: int,
    option: ProxyOption = True,
    environ: Mapping[str, str] | None = None,
) -> Proxy | None:
    """Choose the proxy for a connection to `host:port`, or None to connect directly.

    Args:
        secure: True for wss:// (uses `https_proxy`), False for ws:// (uses `http_proxy`).
        host: the server's host.
        port: the server's port.
        option: the `proxy=` option: True reads the environment, a URL names the proxy (even for hosts in
            `no_proxy`), None or False connects directly.
        environ: the environment to read (default: `os.environ`).

    Raises:
        ValueError: for a proxy URL that cannot be used (see `parse_proxy`); the message names the variable.
        TypeError: for a `proxy` option of another type.
    """
    if option is None or option is False:
        return None
    if isinstance(option, str):
        return parse_proxy(option)
    if option is not True:
        raise TypeError(
            f"proxy must be a URL string, True (from the environment) or None, not {option!r}"
        )
    environ = os.environ if environ is None else environ
    name = "https_proxy" if secure else "http_proxy"
    url = _environment(name, environ).strip()
    if not url or proxy_bypassed(host, port, _environment("no_proxy", environ)):
        return None
    try:
        return parse_proxy(url)
    except ValueError as exc:
        raise ValueError(f"{exc} (from the {name} environment variable)") from None


async def _connect_socket(host: str, port: int) -> socket.socket:
    """Open a non-blocking TCP socket to host:port, trying each address the name resolves to."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise errors[0] if errors else OSError(f"no address for {host}")


async def open_tunnel(
    proxy: Proxy, host: str, port: int, *, user_agent: str | None = None
) -> socket.socket:
    """Connect to `proxy` and ask it for a tunnel to `host:port`; return the socket, ready for the server.

    Raises:
        ProxyAuthenticationError: when the proxy answers 407 (or 401, as tinyproxy 1.11 does for wrong
            credentials).
        ProxyError: when the proxy cannot be reached, answers with another status, or breaks HTTP.
    """
    loop = asyncio.get_running_loop()
    try:
        sock = await _connect_socket(proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"cannot connect to the proxy {proxy.url}: {exc}", 0) from exc
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = Headers([("Host", authority)])
        if user_agent is not None:
            headers.add("User-Agent", user_agent)
        if proxy.authorization is not None:
            headers.add("Proxy-Authorization", proxy.authorization)
        # RFC 9110 §9.3.6: the target of CONNECT is the authority (host:port) of the tunnel's far end.
        request = Request("CONNECT", authority, headers)
        reader = ResponseReader(request, max_header_bytes=MAX_PROXY_RESPONSE_BYTES)
        response = None
        try:
            await loop.sock_sendall(sock, serialize_request(request))
        except OSError as exc:
            raise ProxyError(f"the proxy {proxy.url} closed the connection: {exc}", 0) from exc
        while response is None:
            # The server speaks only after the client, so nothing but the proxy's answer can arrive here.
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError as exc:  # a reset, for one
                raise ProxyError(
                    f"the proxy {proxy.url} closed the connection without answering: {exc}", 0
                ) from exc
            try:
                response = reader.feed(data) if data else reader.feed_eof()
            except InvalidHandshake as exc:
                raise ProxyError(f"the proxy {proxy.url} broke HTTP: {exc}", 0) from None
            if response is None and data:
                # A refusal without a length keeps its body coming until the proxy closes, which a proxy
                # that keeps the connection open never does: its status is the answer.
                response = reader.body_until_close()
            if response is None and not data:
                raise ProxyError(
                    f"the proxy {proxy.url} closed the connection without answering", 0
                )
        status = f"HTTP {response.status} {response.reason}"
        details = (response.status, response.headers.items(), response.body)
        if response.status in (401, 407):
            what = "refused the credentials" if proxy.authorization else "requires credentials"
            how = "put them in the proxy URL: http://user:password@host:port"
            schemes = {
                challenge.split(None, 1)[0].lower()
                for field in ("Proxy-Authenticate", "WWW-Authenticate")
                for challenge in response.headers.get_all(field)
                if challenge.strip()
            }
            if schemes and "basic" not in schemes:
                # Only Basic is sent: a proxy that offers Digest or Negotiate alone never takes it.
                how = f"it asks for {', '.join(sorted(schemes))}, and only Basic is supported"
            raise ProxyAuthenticationError(
                f"the proxy {proxy.url} {what} ({status}); {how}", *details
            )
        if not 200 <= response.status < 300:
            raise ProxyError(
                f"the proxy {proxy.url} refused to open a tunnel to {authority} ({status})",
                *details,
            )
    except BaseException:
        sock.close()
        raise
    return sock
