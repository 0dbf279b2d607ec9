"""The real client address behind trusted reverse proxies, from `X-Forwarded-For`.

Owns: the `trusted_proxies` option of `serve` and the rule that turns the socket's peer address and the
request's `X-Forwarded-For` header into the client's address. Only a proxy the operator trusts can speak for
the client: the header is read right to left, each hop counts only when the address that added it is trusted,
and the first untrusted address is the client. A client that sends its own `X-Forwarded-For` through a trusted
proxy thus only adds entries to the left of the one the proxy appends, which are never reached.

Must not know: sockets or WebSocket rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from upwire.protocol.http import Headers

__all__ = ["TrustedProxies"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_address(text: str) -> IPAddress | None:
    """Parse one X-Forwarded-For entry: an IP address, maybe with a port ("1.2.3.4:5", "[::1]:5")."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client reaching an IPv6 socket shows as ::ffff:a.b.c.d; compare it as the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The reverse proxies whose `X-Forwarded-For` header is believed.

    Args:
        proxies: IP addresses or networks ("127.0.0.1", "10.0.0.0/8", "::1"), and "unix" for every peer
            on a Unix socket; empty: trust none.

    Raises:
        ValueError: for an entry that is not an IP address or network.
        TypeError: for a single string instead of a list of them.
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str | bytes):
            raise TypeError(
                f"trusted_proxies must be a list of addresses, not a single string: [{proxies!r}]"
            )
        networks: list[IPNetwork] = []
        # "unix": a proxy that connects over a Unix socket (nginx's `proxy_pass http://unix:/path`):
        # such a peer has no address, and reaching the socket file already takes the file's permissions.
        self.unix = False
        for entry in proxies:
            if str(entry).strip().lower() == "unix":
                self.unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network (like 10.0.0.0/8)"
                ) from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def trusts(self, address: IPAddress | None) -> bool:
        """Tell whether `address` is one of the trusted proxies."""
        return address is not None and any(
            address.version == network.version and address in network for network in self.networks
        )

    def client_address(self, peer: Any, headers: Headers | None) -> Any:
        """Return the client's address: `peer` itself, or (forwarded address, 0) when `peer` is trusted.

        Args:
            peer: the socket's peer address, (host, port[, ...]).
            headers: the request's headers (None before the request arrived).

        The port of a forwarded client is unknown and reported as 0.
        """
        if headers is None:
            return peer
        if isinstance(peer, tuple) and peer:
            if not self.trusts(_parse_address(str(peer[0]))):
                return peer
        elif not (self.unix and isinstance(peer, str)):
            return peer  # a Unix socket's peer ("") is trusted only with "unix" in the list
        hops = [hop for value in headers.get_all("X-Forwarded-For") for hop in value.split(",")]
        client: IPAddress | None = None
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # A garbled entry cannot be traced further back; the last trusted hop is the best answer.
                break
            client = address
            if not self.trusts(address):
                break
        if client is None:
            return peer
        return (str(client), 0)
