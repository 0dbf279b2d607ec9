"""Settings for the whole test suite.

The suite connects to servers it starts on 127.0.0.1. `connect` uses `http_proxy`/`https_proxy` from the
environment by default, so on a machine where they are set, every test would go through that proxy; the
tests run without them, and tests/integration/test_proxy.py sets them itself where it tests them.
"""

from __future__ import annotations

import pytest

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
