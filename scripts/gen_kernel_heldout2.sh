#!/usr/bin/env bash
# Writes scenarios/kernels_heldout2/: one-GPU attention scenarios (ring at cp = 1) for a held-out check of a kernel
# profile fitted with the kernel model of 2026-12-07. Their shapes are in none of: the kernel sweeps
# (kernel_sweep_shapes in calibrate/src/sweeps.cpp and the --quick grid), scenarios/kernels_heldout/ (40/8 and 12/4
# heads), the first off-grid set of scripts/gpu/run_calibrate.sh (24/8 heads, 6k..49k) — see the README there.
# Usage: scripts/gen_kernel_heldout2.sh [hardware]   (default h200-sxm-1; the scenarios name it, validate uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
hw=${1:-h200-sxm-1}
dir=scenarios/kernels_heldout2
mkdir -p "$dir" && rm -f "$dir"/*.json # README.md stays
python3 - "$dir" "$hw" <<'PY'
import json, sys
d, hw = sys.argv[1:3]
def bs(block, density, seed, causal):
    return {"kind": "block_sparse", "block": block, "density": density, "seed": seed, "causal": causal}
def win(w):
    return {"kind": "sliding_window", "window": w}
C, F = {"kind": "causal"}, {"kind": "full"}
# (name, tokens, heads, kv_heads, head_dim, mask, pass)
cases = [
    ("d128-h28kv4-causal-7k", 7168, 28, 4, 128, C, "fwd_bwd"),
    ("d128-h28kv4-full-7k", 7168, 28, 4, 128, F, "fwd_bwd"),
    ("d128-h28kv4-causal-36k", 36864, 28, 4, 128, C, "fwd_bwd"),
    ("d128-h28kv4-window2500-36k", 36864, 28, 4, 128, win(2500), "fwd_bwd"),
    ("d128-h48kv48-full-13k", 13312, 48, 48, 128, F, "fwd_bwd"),
    ("d128-h48kv48-sparse25-13k", 13312, 48, 48, 128, bs(128, 0.25, 9, False), "fwd_bwd"),
    ("d128-h48kv48-causal-26k", 26624, 48, 48, 128, C, "fwd_bwd"),
    ("d128-h20kv4-window5000-22k", 22528, 20, 4, 128, win(5000), "fwd_bwd"),
    ("d128-h20kv4-sparse15c-52k", 53248, 20, 4, 128, bs(128, 0.15, 13, True), "fwd_bwd"),
    ("d64-h32kv8-causal-18k", 18432, 32, 8, 64, C, "fwd_bwd"),
    ("d64-h32kv8-sparse40c-18k", 18432, 32, 8, 64, bs(64, 0.4, 17, True), "fwd_bwd"),
    ("d64-h32kv8-full-44k", 45056, 32, 8, 64, F, "fwd_bwd"),
    ("d64-h6kv6-causal-30k", 30720, 6, 6, 64, C, "fwd_bwd"),
    ("d64-h6kv6-window1800-62k", 63488, 6, 6, 64, win(1800), "fwd_bwd"),
    ("d64-h10kv2-full-9k", 9216, 10, 2, 64, F, "fwd_bwd"),
    ("d128-h16kv2-full-60k-fwd", 61440, 16, 2, 128, F, "fwd"),
    ("d128-h40kv10-causal-30k-fwd", 30720, 40, 10, 128, C, "fwd"),
    ("d64-h24kv3-window3500-42k-fwd", 43008, 24, 3, 64, win(3500), "fwd"),
    ("d64-h64kv8-causal-14k-fwd", 14336, 64, 8, 64, C, "fwd"),
    ("d128-h12kv12-sparse30c-56k-fwd", 57344, 12, 12, 128, bs(128, 0.3, 21, True), "fwd"),
]
for name, tokens, heads, kv, dim, mask, p in cases:
    json.dump({"name": name, "description": "held-out kernel validation, set 2 (scripts/gen_kernel_heldout2.sh)",
               "hardware": hw, "parallel": {"scheme": "ring", "cp": 1}, "pass": p,
               "workload": {"seq_lens": [tokens], "heads": heads, "kv_heads": kv, "head_dim": dim,
                            "dtype": "bf16", "mask": mask}}, open(f"{d}/{name}.json", "w"), indent=1)
PY
ls "$dir"/*.json | wc -l
