"""WebSocket extensions (RFC 6455 §9): the negotiation interface and permessage-deflate (RFC 7692)."""

from upwire.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    ExtensionParams,
    NegotiationError,
    ServerExtensionFactory,
    parse_extensions,
    serialize_extensions,
)
from upwire.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

__all__ = [
    "ClientExtensionFactory",
    "ClientPerMessageDeflateFactory",
    "Extension",
    "ExtensionParams",
    "NegotiationError",
    "PerMessageDeflate",
    "ServerExtensionFactory",
    "ServerPerMessageDeflateFactory",
    "parse_extensions",
    "serialize_extensions",
]
