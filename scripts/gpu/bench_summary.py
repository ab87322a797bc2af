#!/usr/bin/env python3
"""Side-by-side table of cpsim_kernel_bench (bench.json) and bench_peers.py (peers.json): TFLOP/s per
(S, causal, density, pass), unmasked cells only, plus the fraction of the 772 TFLOP/s measured H100
matrix peak (kernels.md) for the cpsim column. Usage: bench_summary.py bench.json [peers.json ...] > summary.md
(several peers files: one per run of bench_peers.py, e.g. one per sequence length)"""
import json
import sys

PEAK = 772.0


def main():
    bench = json.load(open(sys.argv[1]))
    peers = {"rows": [], "gpu": "?", "torch": "?", "command": "-"}
    for path in sys.argv[2:]:
        p = json.load(open(path))
        peers["rows"] += p["rows"]
        peers["torch"], peers["command"] = p.get("torch", "?"), p.get("command", "-")
    key = lambda r: (r["S"], r["causal"], r["density"], r["pass"])
    peer_names = ["sdpa_flash", "sdpa_cudnn", "flex"]
    by_peer = {}
    for r in peers["rows"]:
        if "tflops" in r:
            by_peer[(r["peer"],) + key(r)] = r["tflops"]
    print(f"# cpsim kernels vs peers on {bench['gpu']} (torch {peers.get('torch', '?')})\n")
    print(f"cpsim command: `{bench['command']}`; peers command: `{peers.get('command', '-')}`\n")
    print("TFLOP/s over unmasked cells (fwd 4*cells*H*D, bwd 2.5x); H=%d D=%d bf16, 128x128 blocks.\n" % (bench["heads"], bench["head_dim"]))
    print("| S | causal | density | pass | cpsim (impl) | % of 772 | " + " | ".join(peer_names) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(peer_names))
    for r in bench["rows"]:
        cells = [f"{by_peer[(p,) + key(r)]:.1f}" if (p,) + key(r) in by_peer else "-" for p in peer_names]
        print(f"| {r['S']} | {'yes' if r['causal'] else 'no'} | {r['density']} | {r['pass']} | {r['tflops']:.1f} ({r['impl']}) | "
              f"{100 * r['tflops'] / PEAK:.0f}% | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
