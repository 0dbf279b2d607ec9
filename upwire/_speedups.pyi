from upwire.protocol.events import Event

def apply_mask(data: bytes | bytearray | memoryview, mask_key: bytes, offset: int = 0) -> bytes: ...
def alloc_buffer(size: int, /) -> bytearray: ...
def send_each(fds: list[int], data: bytes | bytearray | memoryview, /) -> list[tuple[int, int]]: ...
def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
) -> bytes: ...
def take_simple_frames(
    buffer: bytes | bytearray | memoryview,
    pos: int,
    masked: bool,
    limit: int,
    events: list[Event],
    /,
) -> int: ...
def read_common_head(
    data: bytes | bytearray | memoryview, /
) -> tuple[str, str, list[str], int] | None: ...
def accept_key(key: str, /) -> str: ...
