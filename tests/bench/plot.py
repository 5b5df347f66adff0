#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench.json as a picture: udsd over each peer, per workload, in plain SVG.

    python3 tests/bench/plot.py build-bench/bench.json tests/bench/bench.svg

Two panels share the rows (one per workload and peer): throughput udsd/peer and p99
udsd/peer, on a log scale around 1.  A dot is the median run's ratio; its bar spans
the lowest to the highest ratio of the runs (run i of udsd against run i of the peer,
as bench.py --repeat interleaves them).  No plotting library: the SVG is written here.
"""
import json
import math
import sys
from xml.sax.saxutils import escape

# The order bench.py runs them in; anything else after, as found.
CELLS = ["conn", "dial", "rr1", "rr8", "rr64", "stream", "http1", "http16", "dialhttp", "dgram1", "dgram8"]
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
LO, HI = 0.1, 10.0  # the axes' range; ratios beyond are drawn at the edge, with their value
ROW, TOP, LEFT, PANEL, GAP = 15, 88, 150, 330, 40


def key_of(r):
    return "mb_per_sec" if r["cell"] == "stream" else "ops_per_sec"


def ratios(u, p, median_key, runs_key):
    """(median, low, high) of udsd/peer, or None where either has no figure."""
    if not u.get(median_key) or not p.get(median_key):
        return None
    med = u[median_key] / p[median_key]
    pairs = [a / b for a, b in zip(u.get(runs_key) or [], p.get(runs_key) or []) if a and b]
    return med, min(pairs + [med]), max(pairs + [med])


def rows_of(results):
    """[(cell, peer, throughput ratios, p99 ratios)] for every unix cell udsd and a peer ran."""
    get = {(r["server"], r["cell"]): r for r in results if r.get("transport", "unix") == "unix"}
    peers = []
    for r in results:
        s = r["server"]
        if s != "udsd" and not s.startswith("udsd-w") and s not in peers:
            peers.append(s)
    cells = [c for c in CELLS if ("udsd", c) in get]
    cells += sorted({r["cell"] for r in results if r["server"] == "udsd" and r["cell"] not in CELLS
                     and r["cell"] != "idle10k"})
    out = []
    for c in cells:
        u = get[("udsd", c)]
        for p in peers:
            if (p, c) not in get:
                continue
            r = get[(p, c)]
            k = key_of(r)
            out.append((c, p, ratios(u, r, k, "runs"), ratios(u, r, "p99_us", "p99_runs")))
    return out, peers


def x_of(v, x0):
    v = min(max(v, LO), HI)
    return x0 + PANEL * (math.log10(v) - math.log10(LO)) / (math.log10(HI) - math.log10(LO))


def panel(out, x0, y0, n, title):
    out.append('<text x="%g" y="%d" class="h">%s</text>' % (x0 + PANEL / 2, y0 - 28, escape(title)))
    for v in (0.1, 0.2, 0.5, 1, 2, 5, 10):
        x = x_of(v, x0)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="%s"/>'
                   % (x, y0 - 6, x, y0 + n * ROW, "one" if v == 1 else "grid"))
        out.append('<text x="%.1f" y="%d" class="tick">%gx</text>' % (x, y0 - 10, v))


def mark(out, x0, y, ratio, colour):
    if ratio is None:
        out.append('<text x="%.1f" y="%d" class="none">not measured</text>' % (x0 + 4, y + 4))
        return
    med, lo, hi = ratio
    out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"/>'
               % (x_of(lo, x0), y, x_of(hi, x0), y, colour))
    out.append('<circle cx="%.1f" cy="%d" r="4" fill="%s"><title>%.2fx (runs %.2fx to %.2fx)</title></circle>'
               % (x_of(med, x0), y, colour, med, lo, hi))
    out.append('<text x="%.1f" y="%d" class="val">%.2fx</text>' % (min(x_of(hi, x0), x0 + PANEL - 30) + 6, y + 4, med))


def render(results, title):
    rows, peers = rows_of(results)
    n = len(rows)
    colour = {p: COLOURS[i % len(COLOURS)] for i, p in enumerate(peers)}
    runs = max([r.get("repetitions", 1) for r in results] or [1])
    width = LEFT + 2 * PANEL + GAP + 40
    height = TOP + n * ROW + 60
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="11">' % (width, height, width, height),
           '<style>.h{font-weight:bold;text-anchor:middle}.tick{text-anchor:middle;fill:#555}'
           '.grid{stroke:#ddd}.one{stroke:#000}.lab{text-anchor:end}.none{fill:#999;font-style:italic}'
           '.val{fill:#333;font-size:10px}.cell{font-weight:bold}</style>',
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>' % (10, escape(title)),
           '<text x="%d" y="34">udsd/peer on a log scale: the dot is the median of %d run%s, the bar '
           'spans the runs\' lowest and highest ratio.</text>' % (10, runs, "" if runs == 1 else "s")]
    x1, x2 = LEFT, LEFT + PANEL + GAP
    panel(out, x1, TOP, n, "throughput, udsd/peer (right of 1: udsd faster)")
    panel(out, x2, TOP, n, "p99 latency, udsd/peer (left of 1: udsd's tail shorter)")
    last = None
    for i, (cell, peer, thr, p99) in enumerate(rows):
        y = TOP + i * ROW + ROW // 2
        if cell != last:
            if last is not None:
                out.append('<line x1="10" y1="%d" x2="%d" y2="%d" stroke="#bbb"/>'
                           % (y - ROW // 2, width - 10, y - ROW // 2))
            out.append('<text x="10" y="%d" class="cell">%s</text>' % (y + 4, escape(cell)))
            last = cell
        out.append('<text x="%d" y="%d" class="lab" fill="%s">%s</text>'
                   % (LEFT - 8, y + 4, colour[peer], escape(peer)))
        mark(out, x1, y, thr, colour[peer])
        mark(out, x2, y, p99, colour[peer])
    out.append('<text x="10" y="%d" fill="#555">stream moves bytes and measures no latency; p99 is '
               'read from buckets 1.6-3.1 %% wide.</text>' % (TOP + n * ROW + 30))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        results = json.load(f)
    with open(sys.argv[2], "w") as f:
        f.write(render(results, "udsd against its peers (tests/bench/bench.py)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
