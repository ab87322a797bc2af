#!/usr/bin/env bash
# Writes scenarios/kernels_heldout/: one-GPU fwd_bwd attention scenarios whose lengths, head counts and masks
# neither the kernel sweeps (calibrate/src/sweeps.cpp) nor the first off-grid set (run_calibrate.sh validate:
# 24/8 heads, 6k..49k) use, for a validation of a profile refitted after looking at that first set.
# Usage: scripts/gen_kernel_heldout.sh [hardware]   (default h200-sxm-1)
set -euo pipefail
cd "$(dirname "$0")/.."
hw=${1:-h200-sxm-1}
dir=scenarios/kernels_heldout
mkdir -p "$dir" && rm -f "$dir"/*.json # README.md stays
python3 - "$dir" "$hw" <<'PY'
import json, sys
d, hw = sys.argv[1:3]
masks = {"causal": {"kind": "causal"}, "full": {"kind": "full"},
         "sparse": {"kind": "block_sparse", "block": 128, "density": 0.35, "seed": 5, "causal": False},
         "window": {"kind": "sliding_window", "window": 1500}}
def put(name, tokens, heads, kv, dim, mask):
    json.dump({"name": name, "description": "held-out kernel validation (scripts/gen_kernel_heldout.sh)",
               "hardware": hw, "parallel": {"scheme": "ring", "cp": 1}, "pass": "fwd_bwd",
               "workload": {"seq_lens": [tokens], "heads": heads, "kv_heads": kv, "head_dim": dim,
                            "dtype": "bf16", "mask": masks[mask]}}, open(f"{d}/{name}.json", "w"), indent=1)
for t in (8192, 20480, 40960):
    for m in masks:
        put(f"d128-h40-{m}-{t}", t, 40, 8, 128, m)
for t in (10240, 28672):
    for m in ("causal", "full"):
        put(f"d64-h12-{m}-{t}", t, 12, 4, 64, m)
PY
ls "$dir"/*.json | wc -l
