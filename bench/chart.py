#!/usr/bin/env python3
"""Chart and Markdown table of a bench.py run: upwire against its peers, as ratios measured in the same run.

    bench/.venv/bin/python bench/chart.py bench/results/run.json --png docs/benchmarks.png --markdown

The ratio of upwire to a peer is the median over repeats of (upwire / peer) taken in the same repeat, so
it is as fair as the interleaving allows. For rows where lower is better (CPU, latency, memory, broadcast
time) the ratio is still upwire / peer, so there a ratio below 1 means upwire is better.
"""

import argparse
import gzip
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import ROWS, fmt  # noqa: E402

LOOPS = ("asyncio", "uvloop")
PEERS = ("websockets", "aiohttp", "picows")
CHART_ROWS = (
    "tp_16_1c",
    "tp_1k_1c",
    "tp_16_100c",
    "tp_1k_100c",
    "tp_64k_1c",
    "tp_1m_1c",
    "conn_seq",
)
# The rows whose issue-3 target is picows' own figure (≥ 1.0×): one panel of upwire ÷ picows, both APIs.
PICOWS_ROWS = ("tp_64k_1c", "tp_1m_1c", "tp_64k_100c", "tp_1m_100c", "conn_seq", "conn_50c")


def load(path):
    """A bench.py result file, plain or gzipped (bench/recorded/ keeps the documented runs gzipped)."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
        return json.load(f)


def by_rep(result, server, mid):
    """{repeat: value} of one server for one table row, read from the raw runs."""
    row = next(r for r in ROWS if r[0] == mid)
    test, path = row[2], row[3]
    out = {}
    for run in result["runs"]:
        if run["server"] != server or run["test"] != test:
            continue
        value = run["result"]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            out[run["rep"]] = value
    return out


def ratio(result, mid, server, peer):
    mine, theirs = by_rep(result, server, mid), by_rep(result, peer, mid)
    ratios = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
    return statistics.median(ratios) if ratios else None


def upwire_cell(result, server, entry):
    """The absolute figure, or why there is none (every run failed, or the test was not run that far)."""
    if entry["median"] is None or entry["median"] == 0:
        test = next(r[2] for r in ROWS if r[3] and r[1] == entry["label"])
        failed = any(
            "error" in run["result"] or run["result"].get("errors")
            for run in result["runs"]
            if run["server"] == server and run["test"] == test
        )
        return "failed" if failed else "-"
    return fmt(entry["median"])


def upwire_name(result):
    """'upwire', or 'upwire@<sha>' when the run measured a snapshot (bench.py --upwire-ref)."""
    names = [n.rsplit("-", 1)[0] for n in result["servers"] if n.startswith("upwire@")]
    return names[0] if names else "upwire"


def markdown(result):
    summary = result["summary"]
    lines = []
    for loop in LOOPS:
        me = f"{upwire_name(result)}-{loop}"
        if not any(me in summary.get(mid, {}) for mid, *_ in ROWS):
            continue
        lines.append(f"\n**{loop}** (upwire / peer; median of per-repeat ratios)\n")
        lines.append("| figure | upwire | ÷ websockets | ÷ aiohttp | ÷ picows | ÷ raw TCP |")
        lines.append("|---|---|---|---|---|---|")
        for mid, label, _test, _path, higher in ROWS:
            entry = summary.get(mid, {}).get(me)
            if entry is None:
                continue
            cells = [upwire_cell(result, me, entry)]
            for peer in (*PEERS, "raw"):
                r = ratio(result, mid, me, f"{peer}-{loop}")
                cells.append("-" if r is None else f"{r:.2f}")
            arrow = "↑" if higher else "↓"
            lines.append(f"| {' '.join(label.split())} {arrow} | " + " | ".join(cells) + " |")
    lines += listener_markdown(result)
    clients = result.get("clients")
    if clients:
        lines.append(
            f"\n**client side** (msg/s, pipelined window of {clients['window']}; ratios in the same repeat)\n"
        )
        lines.append("| client | size | msg/s | ÷ websockets | ÷ picows | server CPU |")
        lines.append("|---|---|---|---|---|---|")
        for e in clients["summary"].values():

            def cell(x, f="{:.2f}"):
                return "-" if x is None else f.format(x)

            lines.append(
                f"| {e['client']}-{e['loop']} | {e['size']} B | {cell(e['median'], '{:,.0f}')} | "
                f"{cell(e['ratio_to_websockets'])} | {cell(e['ratio_to_picows'])} | "
                f"{cell(e['server_cpu_util_median'], '{:.0%}')} |"
            )
    return "\n".join(lines)


def listener_markdown(result):
    """The low-level API's rows (upwire-listener-<loop>), asyncio / uvloop in one table."""
    summary = result["summary"]
    names = [f"upwire-listener-{loop}" for loop in LOOPS]
    if not any(name in summary.get(mid, {}) for mid, *_ in ROWS for name in names):
        return []
    lines = [
        "\n**low-level API** (`upwire.Listener`; asyncio / uvloop; median of per-repeat ratios)\n",
        "| figure | upwire-listener | ÷ picows | ÷ raw TCP |",
        "|---|---|---|---|",
    ]
    for mid, label, _test, _path, higher in ROWS:
        entries = [summary.get(mid, {}).get(name) for name in names]
        if all(e is None for e in entries):
            continue
        absolute = " / ".join(
            "-" if e is None else upwire_cell(result, name, e)
            for name, e in zip(names, entries, strict=True)
        )
        cells = [absolute]
        for peer in ("picows", "raw"):
            ratios = [
                ratio(result, mid, name, f"{peer}-{loop}")
                for name, loop in zip(names, LOOPS, strict=True)
            ]
            cells.append(" / ".join("-" if r is None else f"{r:.2f}" for r in ratios))
        arrow = "↑" if higher else "↓"
        lines.append(f"| {' '.join(label.split())} {arrow} | " + " | ".join(cells) + " |")
    return lines


def chart(result, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    up = upwire_name(result)
    libs = (up, *PEERS)
    colors = {
        up: "#d62728",
        "upwire": "#d62728",
        "websockets": "#1f77b4",
        "aiohttp": "#2ca02c",
        "picows": "#9467bd",
    }
    rows = [r for r in ROWS if r[0] in CHART_ROWS and r[0] in summary]
    clients = result.get("clients")
    against_picows = [
        (f"{api}-{loop}", f"picows-{loop}")
        for api in (up, "upwire-listener")
        for loop in LOOPS
        if f"{api}-{loop}" in result["servers"] and f"picows-{loop}" in result["servers"]
    ]
    picows_rows = [r for r in ROWS if r[0] in PICOWS_ROWS and r[0] in summary]
    panels = len(LOOPS) + (1 if against_picows and picows_rows else 0) + (1 if clients else 0)
    fig, axes = plt.subplots(panels, 1, figsize=(11, 3.6 * panels), squeeze=False)
    width = 0.8 / len(libs)
    for ax, loop in zip(axes[:, 0], LOOPS, strict=False):
        for i, lib in enumerate(libs):
            values = []
            for mid, *_ in rows:
                r = ratio(result, mid, f"{lib}-{loop}", f"websockets-{loop}")
                values.append(r or 0.0)
            xs = [k + (i - (len(libs) - 1) / 2) * width for k in range(len(rows))]
            ax.bar(xs, values, width, label=lib, color=colors[lib])
            for x, value in zip(xs, values, strict=True):
                if not value:
                    ax.text(x, 0.05, "no result", rotation=90, fontsize=7, ha="center", va="bottom")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(2.0, color="#d62728", linewidth=0.8, linestyle="--")
        ax.set_xticks(
            range(len(rows)), [" ".join(label.split()[:-1]) for _, label, *_ in rows], fontsize=8
        )
        ax.set_ylabel("× websockets (higher is better)")
        ax.set_title(
            f"server side, {loop} loop (dashed: issue 3 target of 2× websockets at 16 B / 1 KiB)"
        )
        ax.legend(fontsize=8, ncol=4)
    if against_picows and picows_rows:
        ax = axes[len(LOOPS), 0]
        shades = ("#d62728", "#f08080", "#8c564b", "#c49c94")
        width = 0.8 / len(against_picows)
        for i, (server, peer) in enumerate(against_picows):
            values = [ratio(result, mid, server, peer) or 0.0 for mid, *_ in picows_rows]
            xs = [k + (i - (len(against_picows) - 1) / 2) * width for k in range(len(picows_rows))]
            ax.bar(xs, values, width, label=server, color=shades[i % len(shades)])
            for x, value in zip(xs, values, strict=True):
                if not value:
                    ax.text(x, 0.05, "no result", rotation=90, fontsize=7, ha="center", va="bottom")
        ax.axhline(1.0, color="#9467bd", linewidth=0.8, linestyle="--")
        ax.set_xticks(
            range(len(picows_rows)),
            [
                " ".join(label.split()[:-1]) if label.split()[-1] in ("msg/s", "MB/s") else label
                for _, label, *_ in picows_rows
            ],
            fontsize=8,
        )
        ax.set_ylabel("× picows (higher is better)")
        ax.set_title("large messages and handshakes against picows (dashed: issue 3 target, 1.0×)")
        ax.legend(fontsize=8, ncol=4)
    if clients:
        ax = axes[-1, 0]
        entries = list(clients["summary"].values())
        keys = sorted({(e["loop"], e["size"]) for e in entries})
        names = ("upwire", "websockets", "picows")
        for i, name in enumerate(names):
            values = []
            for loop, size in keys:
                e = clients["summary"].get(f"{name}-{loop}-{size}")
                values.append((e or {}).get("ratio_to_websockets") or 0.0)
            xs = [k + (i - 1) * 0.27 for k in range(len(keys))]
            ax.bar(xs, values, 0.27, label=name, color=colors[name])
            for x, value in zip(xs, values, strict=True):
                if not value:
                    ax.text(x, 0.05, "no result", rotation=90, fontsize=7, ha="center", va="bottom")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(
            range(len(keys)), [f"client {size} B, {loop}" for loop, size in keys], fontsize=8
        )
        ax.set_ylabel("× websockets client")
        ax.set_title("client side: echo msg/s against one batching echo server")
        ax.legend(fontsize=8, ncol=3)
    meta = result["meta"]
    fig.suptitle(
        f"{up} (checkout {meta.get('upwire_commit', '')}) vs peers — {meta['time']}, {meta.get('cpu')} x{meta['nproc']}, "
        f"medians of {meta['repeats']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"chart: {png}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "json", nargs="+", help="bench.py result files (merged: later files add servers/tests)"
    )
    p.add_argument("--png", help="write the chart here")
    p.add_argument("--markdown", action="store_true", help="print the Markdown tables")
    a = p.parse_args()
    result = None
    for path in a.json:
        part = load(path)
        if result is None:
            result = part
        else:
            result["runs"] += part["runs"]
            for mid, entries in part["summary"].items():
                result["summary"].setdefault(mid, {}).update(entries)
            if part.get("clients"):
                result["clients"] = part["clients"]
    if a.png:
        chart(result, a.png)
    if a.markdown:
        print(markdown(result))


if __name__ == "__main__":
    main()
