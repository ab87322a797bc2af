#!/usr/bin/env bash
# Scale benchmark of the discrete-event engine (issue 6): zigzag fwd_bwd, CP groups of 64 GPUs
# (8 DGX-H100 nodes) replicated with parallel.dp over 1k..16k GPUs sharing one fat tree, and one CP
# group of 1,024 GPUs. Prints a markdown table of simulated step time, wall time and peak memory
# (/usr/bin/time -v) per size. Usage: scripts/des_scale_bench.sh [build-dir] [out.md] [--skip-1024]
set -euo pipefail
BUILD=${1:-build}
OUT=${2:-/dev/stdout}
SKIP_1024=${3:-}
CPSIM="$BUILD/app/cpsim"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

scenario() { # nodes cp dp topology oversubscription [leaf_ports]
  cat <<JSON
{"name": "des-scale-$1x8-cp$2-dp$3-$4-os$5",
 "hardware": {"name": "dgx-h100-$1", "gpu": {"name": "NVIDIA H100 80GB HBM3", "peak_tflops": 989, "hbm_GBps": 3350,
              "memory_gib": 79.6, "sm_count": 132, "attn_fwd_efficiency": 0.45, "attn_bwd_efficiency": 0.35,
              "launch_overhead_us": 6.0},
              "gpus_per_node": 8, "nodes": $1,
              "intra_node": {"bandwidth_GBps": 300, "latency_us": 15},
              "inter_node": {"bandwidth_GBps": 50, "latency_us": 10, "nics_per_node": 8,
                             "topology": "$4", "leaf_ports": ${6:-32}},
              "fabric_oversubscription": $5},
 "workload": {"seq_lens": [131072], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16", "mask": "causal"},
 "parallel": {"scheme": "zigzag", "cp": $2, "dp": $3}, "pass": "fwd_bwd"}
JSON
}

run_case() { # label nodes cp dp topology oversubscription [leaf_ports]
  local f="$TMP/s.json" j="$TMP/r.json" tv="$TMP/time.txt"
  scenario "$2" "$3" "$4" "$5" "$6" "${7:-32}" > "$f"
  /usr/bin/time -v "$CPSIM" simulate "$f" --engine des -q --json "$j" 2> "$tv" > /dev/null
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$tv" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$tv" | awk '{print $NF}')
  python3 - "$j" "$1" "$wall" "$rss" "$5" "$6" "${7:-32}" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); d = j["des"]
label, wall, rss_kb, topo, os_, leaf = sys.argv[2:8]
print(f"| {label} | {topo}, leaf_ports {leaf}, oversub. {os_} | {j['step_time_s']*1e3:.3f} | {wall} | {int(rss_kb)/1024/1024:.2f} | "
      f"{j['planning_time_s']:.2f} | {d['setup_wall_s']:.2f} | {d['run_wall_s']:.2f} | "
      f"{d['replicas']} / {d['components']} / {d['simulated_replicas']} | {d['flows']} | {d['compute_ops']} |")
PY
}

{
  echo "| GPUs | fabric | simulated step (ms) | wall (m:ss) | peak RSS (GiB) | planning (s) | DES setup (s) | DES event loop (s) | replicas / components / simulated | flows | compute ops |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
  for gpus in 1024 2048 4096 8192 16384; do
    run_case "$gpus (dp $((gpus / 64)))" $((gpus / 8)) 64 $((gpus / 64)) rail_fat_tree 1
  done
  run_case "16384 (dp 256)" 2048 64 256 rail_fat_tree 4
  run_case "16384 (dp 256)" 2048 64 256 fat_tree 4
  # worst case: one scalable unit for all nodes, oversubscribed, so every replica contends with
  # every other on the rail uplinks and none can be collapsed away
  run_case "1024 (dp 16, all contend)" 128 64 16 rail_fat_tree 4 128
  run_case "4096 (dp 64, all contend)" 512 64 64 rail_fat_tree 4 512
  if [ "$SKIP_1024" != "--skip-1024" ]; then
    run_case "1024 (one CP group)" 128 1024 1 rail_fat_tree 1
  fi
} > "$OUT"
