"""Unmasking speed: upwire's C `apply_mask` / `mask_in_place` against websockets' C `apply_mask`.

Every byte a server receives is unmasked once (RFC 6455 §5.3), so this loop runs at the speed of the cache or
it shows in every large-message figure. Each function is timed on the same payload, interleaved, best of
several rounds; the output is GB/s per function and upwire's ratio to websockets.

    bench/.venv/bin/python bench/masking.py [--sizes 16,1024,65536,1048576] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial

KEY = b"\x37\xfa\x21\x3d"


def best_seconds(call: Callable[[], object], number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,1024,65536,1048576")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from websockets.speedups import apply_mask as websockets_apply_mask

    from upwire import _speedups as upwire_c  # the C extension: this measures it, not the twins

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        data = os.urandom(size)
        buffer = bytearray(data)
        number = max(20, min(200_000, (64 << 20) // max(size, 1)))
        candidates: dict[str, Callable[[], object]] = {
            "upwire apply_mask": partial(upwire_c.apply_mask, data, KEY),
            "upwire mask_in_place": partial(upwire_c.mask_in_place, buffer, KEY),
            "websockets apply_mask": partial(websockets_apply_mask, data, KEY),
        }
        assert upwire_c.apply_mask(data, KEY) == websockets_apply_mask(data, KEY)
        seconds = {
            name: best_seconds(call, number, args.rounds) for name, call in candidates.items()
        }
        row = {
            "size": size,
            "GB_per_s": {name: round(size / s / 1e9, 2) for name, s in seconds.items()},
            "upwire_apply_mask_vs_websockets": round(
                seconds["websockets apply_mask"] / seconds["upwire apply_mask"], 2
            ),
        }
        results.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
