"""Memoryviews whose `len` is not their size in bytes, for the tests that send them (one place for them)."""


def odd_views(data: bytes) -> list[memoryview]:
    """`data` seen as ints, as a 2-D shape, and as every other byte of a doubled copy.

    `len(data)` must be a multiple of 8. Each view's bytes are `data`; none has `len` equal to its byte size
    but the strided one, whose items are not contiguous.
    """
    doubled = bytes(b for byte in data for b in (byte, 0))
    return [
        memoryview(data).cast("i"),
        memoryview(data).cast("B", (len(data) // 8, 8)),
        memoryview(doubled)[::2],
    ]
