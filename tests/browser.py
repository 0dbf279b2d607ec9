"""How the tests start Debian's headless Chromium (one place for the binary and its flags)."""

import os

CHROMIUM = os.environ.get("UPWIRE_CHROMIUM", "/usr/bin/chromium")

# The flags this machine needs: without the background-networking ones Chromium keeps trying to reach
# Google's hosts, which the closed network refuses. Never `playwright install`: Debian's build is used.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
