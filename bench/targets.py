#!/usr/bin/env python3
"""The figures of docs/benchmarks.md's "Against the targets" and "What is left" tables, from bench.py runs.

    bench/.venv/bin/python bench/targets.py bench/recorded/run33.json.gz bench/recorded/run3[012].json.gz ...

The first file is the main run (the one the docs' other tables come from); the others, with it, make the set
whose ranges and medians are shown beside it. Every ratio is chart.py's: the median over repeats of upwire ÷
peer measured in the same repeat.
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from chart import by_rep, load, ratio  # noqa: E402

LOOPS = ("asyncio", "uvloop")
SMALL = ("tp_16_1c", "tp_1k_1c", "tp_16_100c", "tp_1k_100c")
LARGE = {
    "tp_64k_1c": "echo 64 KiB, 1 connection",
    "tp_1m_1c": "echo 1 MiB, 1 connection",
    "tp_64k_100c": "echo 64 KiB, 100 connections",
    "tp_1m_100c": "echo 1 MiB, 100 connections",
}


def span(values, form="{:.2f}"):
    """'low–high' of the values measured (a row some run lacks is left out), or '-'."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}–{high}"


def ratios(runs, api, peer, rows, loops=LOOPS):
    return [
        ratio(r, mid, f"{api}-{loop}", f"{peer}-{loop}")
        for r in runs
        for mid in rows
        for loop in loops
    ]


def per_loop(runs, api, peer, mid):
    """'asyncio / uvloop' spans of one row's ratio."""
    return " / ".join(span(ratios(runs, api, peer, [mid], [loop])) for loop in LOOPS)


def rss(runs, api):
    def median(run, server):
        values = by_rep(run, server, "rss_conn")
        return statistics.median(values.values()) if values else None

    return " / ".join(span([median(r, f"{api}-{loop}") for r in runs]) for loop in LOOPS)


def targets_table(main, runs):
    """One line per target: the main run's figures, then the set's."""
    pct = "{:.0%}"
    hl, ll = "upwire", "upwire-listener"
    rows = [
        (
            "high-level API ≥ 2× websockets and ≥ 1.2× aiohttp, 16 B and 1 KiB, 1 and 100 connections",
            f"{span(ratios([main], hl, 'websockets', SMALL))}× websockets, "
            f"{span(ratios([main], hl, 'aiohttp', SMALL))}× aiohttp",
            f"{span(ratios(runs, hl, 'websockets', SMALL))}× websockets, "
            f"{span(ratios(runs, hl, 'aiohttp', SMALL))}× aiohttp",
        ),
        (
            "low-level API ≥ 1.0× picows",
            f"{span(ratios([main], ll, 'picows', SMALL))}× at 16 B and 1 KiB; "
            f"{span(ratios([main], ll, 'picows', LARGE))}× at 64 KiB and 1 MiB",
            f"{span(ratios(runs, ll, 'picows', SMALL))}× at 16 B and 1 KiB; "
            f"{span(ratios(runs, ll, 'picows', LARGE))}× at 64 KiB and 1 MiB",
        ),
        (
            "64 KiB and 1 MiB ≥ 1.0× picows and ≥ 70 % of raw TCP",
            f"Listener {span(ratios([main], ll, 'picows', LARGE))}× picows, "
            f"{span(ratios([main], ll, 'raw', LARGE), pct)} of raw; high-level "
            f"{span(ratios([main], hl, 'picows', LARGE))}× picows, "
            f"{span(ratios([main], hl, 'raw', LARGE), pct)} of raw",
            f"Listener {span(ratios(runs, ll, 'picows', LARGE))}× picows, "
            f"{span(ratios(runs, ll, 'raw', LARGE), pct)} of raw; high-level "
            f"{span(ratios(runs, hl, 'picows', LARGE))}× picows, "
            f"{span(ratios(runs, hl, 'raw', LARGE), pct)} of raw",
        ),
        (
            "round trip 16 B p99 within 1.5× raw TCP",
            f"high-level {per_loop([main], hl, 'raw', 'lat_p99')}×, Listener "
            f"{per_loop([main], ll, 'raw', 'lat_p99')}×",
            f"high-level {per_loop(runs, hl, 'raw', 'lat_p99')}×, Listener "
            f"{per_loop(runs, ll, 'raw', 'lat_p99')}×",
        ),
        (
            "handshakes/s ≥ picows",
            f"high-level {per_loop([main], hl, 'picows', 'conn_seq')}× one at a time, "
            f"{per_loop([main], hl, 'picows', 'conn_50c')}× with 50 at once; Listener "
            f"{per_loop([main], ll, 'picows', 'conn_seq')}× and {per_loop([main], ll, 'picows', 'conn_50c')}×",
            f"high-level {per_loop(runs, hl, 'picows', 'conn_seq')}× one at a time, "
            f"{per_loop(runs, hl, 'picows', 'conn_50c')}× with 50 at once; Listener "
            f"{per_loop(runs, ll, 'picows', 'conn_seq')}× and {per_loop(runs, ll, 'picows', 'conn_50c')}×",
        ),
        (
            "memory per idle connection ≤ 6 KiB at 10,000",
            f"{rss([main], hl)} KiB (Listener {rss([main], ll)})",
            f"{rss(runs, hl)} KiB (Listener {rss(runs, ll)})",
        ),
        (
            "broadcast 64 B to 10,000 ≤ the raw TCP time",
            f"{per_loop([main], hl, 'raw', 'bcast_10k')}× raw (Listener "
            f"{per_loop([main], ll, 'raw', 'bcast_10k')}×)",
            f"{per_loop(runs, hl, 'raw', 'bcast_10k')}× raw (Listener "
            f"{per_loop(runs, ll, 'raw', 'bcast_10k')}×)",
        ),
    ]
    lines = ["| target | main run | every run of the set |", "|---|---|---|"]
    lines += [
        f"| {target} | {main_cells} | {set_cells} |" for target, main_cells, set_cells in rows
    ]
    return "\n".join(lines)


def large_rows_table(runs):
    """Per large row and API, upwire ÷ picows over the set: median, then the range; asyncio / uvloop."""
    lines = ["| row | high-level API | Listener |", "|---|---|---|"]
    for mid, label in LARGE.items():
        cells = []
        for api in ("upwire", "upwire-listener"):
            parts = []
            for loop in LOOPS:
                values = [v for v in ratios(runs, api, "picows", [mid], [loop]) if v is not None]
                parts.append(f"{statistics.median(values):.2f} ({span(values)})" if values else "-")
            cells.append(" / ".join(parts))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("main", help="the main run's bench.py JSON")
    p.add_argument("others", nargs="*", help="more runs for the set (the main run is in it too)")
    a = p.parse_args()
    runs = [load(path) for path in [a.main, *a.others]]
    print(f"set: {', '.join(os.path.basename(path) for path in [a.main, *a.others])}\n")
    print(targets_table(runs[0], runs))
    print()
    print(large_rows_table(runs))


if __name__ == "__main__":
    main()
