"""`upwire dissect` keeps no payload once a frame is printed or counted: a small capture of highly
compressed messages must not take memory in proportion to what they inflate to."""

from __future__ import annotations

import contextlib
import gc
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest

from upwire.cli import main
from upwire.protocol.frames import Opcode
from upwire.wire.render import frame_json
from upwire.wire.websocket import FrameRecord

from .pcapbuild import DEFLATE_RESPONSE, REQUEST, Conversation, server_frame, write_capture

MESSAGES = 8
SIZE = 48 << 20  # each under the 64 MiB that one message may inflate to


@pytest.fixture(scope="module")
def zeros_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, DEFLATE_RESPONSE)
    compressor = zlib.compressobj(wbits=-15)  # one context for all: context takeover
    for _ in range(MESSAGES):
        compressed = compressor.compress(bytes(SIZE)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        conversation.send(False, server_frame(Opcode.BINARY, compressed[:-4], rsv=4), segment=60000)
    path = tmp_path_factory.mktemp("memory") / "zeros.pcap"
    return write_capture(path, conversation.packets)


def peak_mib(args: list[str], output: Path) -> float:
    """The most memory `upwire ARGS` held at once, its output written to `output` (not held)."""
    gc.collect()
    with output.open("w") as out, contextlib.redirect_stdout(out):
        tracemalloc.start()
        try:
            assert main(args) == 0
            return tracemalloc.get_traced_memory()[1] / (1 << 20)
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("mode", [[], ["--summary"], ["--json"]], ids=["tree", "summary", "json"])
def test_memory_does_not_grow_with_the_inflated_bytes_of_the_capture(
    zeros_capture: Path, mode: list[str], tmp_path: Path
) -> None:
    peak = peak_mib(["dissect", str(zeros_capture), "--color", "never", *mode], tmp_path / "out")
    # 8 messages inflate to 384 MiB; one at a time is 48 MiB.
    assert peak < 160, f"peak {peak:.0f} MiB for {mode or 'the tree'}"
    with (tmp_path / "out").open() as output:
        if mode == ["--json"]:
            frames = [json.loads(line) for line in output][1:]
            assert [len(f["inflated"]) // 2 for f in frames] == [SIZE] * MESSAGES
        elif mode == []:
            assert output.read().count(f"ends it ({SIZE} bytes)") == MESSAGES
        else:
            assert f"{MESSAGES * SIZE}" in output.read()


@pytest.mark.parametrize("masked", [False, True])
def test_a_large_frame_written_in_pieces_is_the_same_json_line(masked: bool) -> None:
    text = ('a "quoted"\n\tline, é, 😀 \x01' * 9000)[:150_001]
    payload = text.encode()
    record = FrameRecord(
        stream=0, index=3, time=1.5, packet=7, direction="client-to-server", src="a:1", dst="b:2",
        fin=True, rsv=0, opcode=1, masked=masked, mask_key=b"\x01\x02\x03\x04" if masked else None,
        payload_length=len(payload), length_bits=64, header_length=14 if masked else 10,
        header=b"", payload=payload, message=0, message_opcode=1, text=text,
        inflated=payload[:70_003], violations=["a \"violation\""],
    )  # fmt: skip
    whole = json.dumps(record.to_json(), ensure_ascii=False) + "\n"
    pieces = list(frame_json(record))
    assert len(pieces) > 3 and max(len(piece) for piece in pieces) < len(payload)
    assert "".join(pieces) == whole
