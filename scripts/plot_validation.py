#!/usr/bin/env python3
"""Predicted against measured, from the CSV `cpsim validate` writes: log axes, the y = x line, and
+-10 % bands; step times and per-op durations in different markers, coloured by op kind.

usage: plot_validation.py validation.csv out.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display on CI or GPU machines
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    rows = list(csv.DictReader(open(argv[1], newline="")))
    if not rows:
        sys.stderr.write(f"{argv[1]}: no rows to plot\n")
        return 2
    fig, ax = plt.subplots(figsize=(6.5, 6))
    kinds = sorted({r["item"].split(":")[0] for r in rows if r["level"] == "op"})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lo, hi = float("inf"), 0.0
    for i, kind in enumerate(kinds):
        pts = [r for r in rows if r["level"] == "op" and r["item"].split(":")[0] == kind]
        x = [float(r["measured_s"]) for r in pts]
        y = [float(r["predicted_s"]) for r in pts]
        ax.scatter(x, y, s=10, alpha=0.6, color=colours[i % len(colours)], label=f"op: {kind}")
        lo, hi = min(lo, *x, *y), max(hi, *x, *y)
    steps = [r for r in rows if r["level"] == "step"]
    if steps:
        x = [float(r["measured_s"]) for r in steps]
        y = [float(r["predicted_s"]) for r in steps]
        ax.scatter(x, y, s=40, marker="D", facecolors="none", edgecolors="black", label="step time")
        lo, hi = min(lo, *x, *y), max(hi, *x, *y)
    lo, hi = lo / 1.5, hi * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="y = x")
    ax.plot([lo, hi], [lo * 1.1, hi * 1.1], color="grey", linewidth=0.6, linestyle="--", label="+-10 %")
    ax.plot([lo, hi], [lo / 1.1, hi / 1.1], color="grey", linewidth=0.6, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured (s)")
    ax.set_ylabel("predicted (s)")
    ax.set_title("cpsim validate: predicted vs measured")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
