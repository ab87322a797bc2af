#!/usr/bin/python3
"""Picture of which rank computes which cell of a sequence's score matrix, read from a plan.

The plan is the JSON that `cpsim plan scenario.json -o plan.json` writes; every forward attention
op's segments are rectangles (query range x key range) of one sequence, and the rank running the op
owns them. For CQS the picture is the cyclic-quorum ownership of the W x W group cells; for DCP it
shows the work blocks each GPU got from the partitioner. Masked cells are drawn white, using the
mask kinds whose definition is a simple predicate (full, causal, sliding_window); other masks show
the owner of every cell of a segment.

usage: /usr/bin/python3 scripts/plot_cell_owners.py plan.json out.png [--seq 0] [--pixels 512]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def owner_grid(plan, seq, pixels):
    sched = plan["schedule"]
    n = plan["scenario"]["workload"]["seq_lens"][seq]
    px = min(pixels, n)
    grid = np.full((px, px), -1, dtype=int)
    scale = px / n
    for rank in sched["ranks"]:
        for op in rank["ops"]:
            if op["kind"] != "attention" or op.get("dir", "fwd") != "fwd":
                continue
            for s in op["segments"]:
                if s["seq"] != seq or len(s["q"]) > 2 or len(s["k"]) > 2:
                    continue  # strided segments are not drawn
                q0, q1 = (int(s["q"][0] * scale), max(int(s["q"][0] * scale) + 1, int(s["q"][1] * scale)))
                k0, k1 = (int(s["k"][0] * scale), max(int(s["k"][0] * scale) + 1, int(s["k"][1] * scale)))
                grid[q0:q1, k0:k1] = rank["rank"]
    mask = plan["scenario"]["workload"]["mask"]
    i, j = np.meshgrid(np.arange(px), np.arange(px), indexing="ij")
    if mask["kind"] == "causal":
        grid[j > i] = -1
    elif mask["kind"] == "sliding_window":
        w = mask["window"] * scale
        grid[(j > i) | (j <= i - w)] = -1
    return grid, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan")
    ap.add_argument("out")
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--pixels", type=int, default=512)
    a = ap.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    grid, n = owner_grid(plan, a.seq, a.pixels)
    world = plan["schedule"]["world"]
    cmap = plt.get_cmap("tab20" if world <= 20 else "nipy_spectral", world).copy()
    cmap.set_under("white")
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=world - 0.5, interpolation="nearest",
                   extent=(0, n, n, 0))
    sc = plan["scenario"]
    ax.set_title(f"{plan['schedule']['scheme']}: owner of each cell, sequence {a.seq} ({n} tokens), "
                 f"cp = {sc['parallel']['cp']}", fontsize=9)
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    cb = fig.colorbar(im, ax=ax, ticks=range(0, world, max(1, world // 16)))
    cb.set_label("rank (worker)")
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)


if __name__ == "__main__":
    main()
