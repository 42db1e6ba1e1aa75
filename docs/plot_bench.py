#!/usr/bin/env python3
"""Draws docs/bench-scale.svg from `azure-cloud-controller-manager bench --json FILE` results.

    python3 docs/plot_bench.py docs/bench-results/*.json > docs/bench-scale.svg

Three panels against cluster size (nodes; Services in brackets): S2 ARM writes (ours, the theoretical
minimum, upstream's estimate of about 3 writes per Service), S2 time to IP (p50 and p99, simulated
seconds) and the CCM's peak RSS (with the targets). Standard library only.
"""
import json
import sys


def load(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        s2 = next((ph for ph in r["phases"] if ph["name"].startswith("S2")), None)
        if s2 is None:
            continue
        minimum = None
        for c in s2["checks"]:
            text = c["check"]
            if "minimum" in text:
                minimum = int(text.split("minimum ")[1].split(";")[0].replace(",", ""))
        runs.append({
            "nodes": r["nodes"],
            "services": r["services"],
            "writes": s2["writes"],
            "minimum": minimum if minimum is not None else s2["writes"],
            "upstream": 3 * r["services"],
            "p50": s2["figures"].get("time_to_ip_p50_s", 0.0),
            "p99": s2["figures"].get("time_to_ip_p99_s", 0.0),
            "rss": r["peak_rss_mib"],
        })
    return sorted(runs, key=lambda r: r["nodes"])


def panel(x0, title, runs, series, unit, targets=()):
    """One line chart: series = [(key, label, colour)], targets = [(nodes_from, value, label)]."""
    w, h, left, bottom = 320, 220, 50, 40
    xs = [r["nodes"] for r in runs]
    ymax = max([r[k] for r in runs for k, _, _ in series] + [t[1] for t in targets] + [1]) * 1.15
    xmax = max(xs) * 1.05

    def px(n):
        return x0 + left + (n / xmax) * (w - left - 10)

    def py(v):
        return 40 + (h - bottom) * (1 - v / ymax)

    out = [f'<text x="{x0 + w / 2}" y="28" text-anchor="middle" font-size="13">{title}</text>',
           f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(xmax)}" y2="{py(0)}" stroke="#444"/>',
           f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(0)}" y2="{py(ymax)}" stroke="#444"/>',
           f'<text x="{x0 + 12}" y="{py(ymax) - 6}" font-size="10">{unit}</text>']
    for i in range(5):
        v = ymax / 1.15 * i / 4
        out.append(f'<text x="{px(0) - 4}" y="{py(v) + 3}" text-anchor="end" font-size="9">{v:,.0f}</text>')
    for r in runs:
        out.append(f'<text x="{px(r["nodes"])}" y="{py(0) + 13}" text-anchor="middle" font-size="9">'
                   f'{r["nodes"]:,}</text>')
        out.append(f'<text x="{px(r["nodes"])}" y="{py(0) + 23}" text-anchor="middle" font-size="8" '
                   f'fill="#666">({r["services"]:,})</text>')
    for n0, v, label in targets:
        out.append(f'<line x1="{px(n0 * 0.9)}" y1="{py(v)}" x2="{px(xmax)}" y2="{py(v)}" stroke="#d95f5f" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{px(xmax) - 2}" y="{py(v) - 3}" text-anchor="end" font-size="9" '
                   f'fill="#d95f5f">{label}</text>')
    for j, (key, label, colour) in enumerate(series):
        pts = " ".join(f"{px(r['nodes']):.1f},{py(r[key]):.1f}" for r in runs)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for r in runs:
            out.append(f'<circle cx="{px(r["nodes"]):.1f}" cy="{py(r[key]):.1f}" r="2.5" fill="{colour}"/>')
        out.append(f'<rect x="{x0 + left + 6}" y="{48 + 13 * j}" width="10" height="3" fill="{colour}"/>')
        out.append(f'<text x="{x0 + left + 20}" y="{52 + 13 * j}" font-size="10">{label}</text>')
    return out


def main():
    runs = load(sys.argv[1:])
    if not runs:
        sys.exit("no bench results with an S2 phase given")
    body = []
    body += panel(0, "S2: ARM writes to create all Services", runs,
                  [("upstream", "upstream (≈3 per Service, estimate)", "#d95f5f"),
                   ("writes", "ours", "#2b7bb9"), ("minimum", "theoretical minimum", "#9ecae1")], "writes")
    body += panel(330, "S2: time to IP (simulated s)", runs,
                  [("p99", "p99", "#2b7bb9"), ("p50", "p50", "#9ecae1")], "seconds", [(0, 60, "target 60 s")])
    body += panel(660, "CCM peak RSS", runs, [("rss", "peak RSS (release build)", "#2b7bb9")], "MiB",
                  [(1000, 64, "64 MiB @1,000"), (5000, 256, "256 MiB @5,000")])
    print('<svg xmlns="http://www.w3.org/2000/svg" width="990" height="270" font-family="sans-serif">')
    print('<rect width="990" height="270" fill="white"/>')
    print("\n".join(body))
    print('<text x="495" y="264" text-anchor="middle" font-size="10" fill="#444">nodes (Services); '
          'azure-sim with throttling, 50 ms per call, 2 s per long-running operation</text>')
    print("</svg>")


if __name__ == "__main__":
    main()
