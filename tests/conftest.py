"""Settings for the whole test suite.

The suite connects to servers it starts on 127.0.0.1. `connect` uses `http_proxy`/`https_proxy` from the
environment by default, so on a machine where they are set, every test would go through that proxy; the
tests run without them, and tests/integration/test_proxy.py sets them itself where it tests them.
"""

from __future__ import annotations

import os

import pytest

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def direct_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each read a connection makes on its socket itself (`os.readv`), not through its
    transport (on asyncio's loop, the rest of a large message arriving into its bytes)."""
    sizes: list[int] = []
    readv = os.readv

    def spy(fd: int, buffers: list[memoryview]) -> int:
        nbytes = readv(fd, buffers)
        sizes.append(nbytes)
        return nbytes

    monkeypatch.setattr(os, "readv", spy)
    return sizes
