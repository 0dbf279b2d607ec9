"""The fast path for reading the common HTTP/1.1 request head, beside h11 (the reference parser).

Owns: recognising, in one pass and without a per-byte Python loop, a request head that arrived whole and
is in the plain form almost every client sends — `HTTP/1.1`, CRLF line ends, no obs-fold, exactly one
Host field, no Content-Length or Transfer-Encoding — and returning its parts exactly as h11 would.

Must not know: limits, errors or the `Request` value (`http.RequestReader` applies those). Anything else,
valid or not, is not this module's to judge: `read_common_head` returns None and h11 decides, so the rules
and error messages stay h11's.

`read_common_head` is the C version from `upwire._speedups` when it is built (one loop over the bytes);
`read_common_head_py` is its pure-Python twin (one compiled regular expression), the reference.
`tests/protocol/test_request_head.py` checks that both agree with h11, and with each other, on random and
mutated heads.
"""

from __future__ import annotations

import re

from upwire.protocol.frames import select_speedup

__all__ = ["CommonHead", "read_common_head", "read_common_head_py"]

# The grammar is h11's (`h11/_abnf.py`: RFC 9112 with erratum 4189 on field-content), restricted to CRLF
# line ends and HTTP/1.1. A field line is `name ":" OWS field-value OWS` where the value is runs of
# visible (or obs-text, or control other than NUL) characters joined by spaces and tabs: so the part after
# the colon is valid exactly when it holds none of NUL, CR, LF, VT, FF (the ASCII white space other than
# SP and HTAB), and the value is that part stripped of SP and HTAB. Simple character classes keep the
# regular expression engine in its fast loops. The head is decoded as Latin-1 first (one byte per
# character, so indexes are byte offsets); re.ASCII keeps the classes to these exact bytes.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_AFTER_COLON = r"[^\x00\n\r\x0b\x0c]*"
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/1\.1\r\n", re.ASCII)
_FIELD_LINE_RE = re.compile(rf"({_TOKEN}):[ \t]*({_AFTER_COLON})\r\n", re.ASCII)

CommonHead = tuple[str, str, list[str], int]
"""(method, target, fields as a flat [name, value, ...] list, length of the head in bytes)."""


def read_common_head_py(data: bytes) -> CommonHead | None:
    """Read a whole request head at the start of `data` if it is in the common form; else return None.

    A head returned here is one h11 would accept with the same method, target, names (as received) and
    values, ending at the same byte. None says nothing about validity: the head may be incomplete,
    malformed, or valid in a rarer form; h11 must read it.
    """
    # Decoding a long first segment (frames sent right behind the head, say) would be wasted work.
    end = data.find(b"\r\n\r\n", 0, 65536)
    if end < 0:
        return None
    text = data[: end + 2].decode("latin-1")  # up to the CRLF of the last line
    request_line = _REQUEST_LINE_RE.match(text)
    if request_line is None:
        return None
    block = text[request_line.end() :]
    # Which fields are there, from the lower-cased lines (a valid value holds no LF, so every "\n" in
    # the block starts a line), instead of a Python loop over the fields.
    lines = "\n" + block.lower()
    if lines.count("\nhost:") != 1:
        return None  # h11 refuses a head without Host or with two (RFC 9112 §3.2)
    # h11 rewrites Content-Length (deduplicated) and Transfer-Encoding (lower-cased, or 501): left to it.
    if "\ncontent-length:" in lines or "\ntransfer-encoding:" in lines:
        return None
    # [gap, name, value, gap, name, value, ..., gap]: every line is a field line when every gap is empty.
    parts = _FIELD_LINE_RE.split(block)
    if any(parts[::3]):
        return None
    del parts[::3]
    if " \r\n" in block or "\t\r\n" in block:
        parts[1::2] = [value.rstrip(" \t") for value in parts[1::2]]  # trailing OWS
    return request_line[1], request_line[2], parts, end + 4


read_common_head = select_speedup(read_common_head_py)
