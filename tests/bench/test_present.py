# SPDX-License-Identifier: MIT
"""The bench's presentation (bench.py's tables, plot.py's SVG) on made-up results."""
import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import plot  # noqa: E402


def res(server, cell, ops, p99, cpu, transport="unix", runs=None, p99_runs=None):
    r = dict(server=server, cell=cell, transport=transport, ops_per_sec=ops, mb_per_sec=ops,
             p50_us=p99 / 2, p99_us=p99, mean_us=0, cpu_us_op=cpu, cpu_s=cpu, rss_kib=1024, errors=0)
    if runs:
        r.update(runs=runs, p99_runs=p99_runs, repetitions=len(runs))
    return r


RESULTS = [
    res("udsd", "rr1", 100000, 61.7, 2.0, runs=[90000, 100000, 110000], p99_runs=[60, 61.7, 70]),
    res("udsd", "stream", 1500, 0, 100.0, runs=[1400, 1500, 1600], p99_runs=[0, 0, 0]),
    res("udsd", "rr8", 180000, 1868.3, 1.6),
    res("udsd", "rr1", 40000, 90.0, 50.0, transport="tcp"),  # only udsd runs these two
    res("udsd", "dgram1", 50000, 30.0, 40.0),
    res("floor", "rr1", 125000, 40.04, 1.0, runs=[120000, 125000, 130000], p99_runs=[38, 40.04, 45]),
    res("floor", "stream", 2500, 0, 50.0, runs=[2400, 2500, 2600], p99_runs=[0, 0, 0]),
    res("floor", "rr8", 240000, 201.0, 1.4),
    res("udsd-bp", "rr1", 140000, 14.2, 4.0),
]


def test_stream_cells_show_no_p99_and_p99_has_two_digits():
    t = bench.table(RESULTS)
    stream = [l for l in t.splitlines() if l.startswith("| stream")]
    assert stream and "p99" not in stream[0]
    assert "1500 cpu 100.0" in stream[0]
    rr8 = [l for l in t.splitlines() if l.startswith("| rr8")][0]
    assert "180000 p99 1900us" in rr8 and "240000 p99 200us" in rr8
    rr1 = [l for l in t.splitlines() if l.startswith("| rr1")][0]
    assert "p99 62us" in rr1 and "p99 40us" in rr1 and "p99 14us" in rr1
    assert not re.search(r"p99 \d+\.\d\dus", t)


def test_every_ratio_reads_udsd_over_the_peer():
    t = bench.table(RESULTS)
    rr1 = [l for l in t.splitlines() if l.startswith("| rr1")][0]
    # floor: 100000/125000; the busy-poll udsd: 100000/140000, the same way round.
    assert "(udsd/peer 0.80x; cpu 2.00x)" in rr1
    assert "(udsd/peer 0.71x; cpu 0.50x)" in rr1
    assert "udsd/peer Nx" in t


def test_the_cpu_row_compares_the_same_cells():
    t = bench.table(RESULTS)
    row = [l for l in t.splitlines() if l.startswith("| CPU us per op")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # floor ran rr1 and rr8 (stream is per MB, not per op): udsd's tcp and dgram cells,
    # which floor never ran, stay out.  udsd (2.0 + 1.6) / 2 against floor (1.0 + 1.4) / 2.
    assert cells[2] == "1.2 (1.50x; 2 cells)"
    assert cells[3] == "4.0 (0.50x; 1 cells)"


def test_plot_draws_each_ratio_with_its_spread():
    svg = plot.render(RESULTS, "test")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    titles = [c.find("s:title", ns).text for c in root.iter("{http://www.w3.org/2000/svg}circle")]
    # rr1 vs floor: median 0.80x, runs 90000/120000 = 0.75x to 110000/130000 = 0.85x.
    assert "0.80x (runs 0.75x to 0.85x)" in titles
    # p99 of rr1 vs floor: 61.7/40.04 = 1.54x, runs 60/38 = 1.58x, 61.7/40.04, 70/45 = 1.56x.
    assert "1.54x (runs 1.54x to 1.58x)" in titles
    # stream: a throughput ratio, and no p99 to draw.
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "0.60x" in texts and texts.count("not measured") == 1
    assert {"floor", "udsd-bp"} <= set(texts)
