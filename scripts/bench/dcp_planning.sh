#!/bin/bash
# DCP planning-time benchmark (issue 7): plans of 128k-token variable-length batches on 64 GPUs
# (8 DGX-H100 nodes), one core (taskset -c 0), for both dataset shapes, every DCP mask and several
# seeds, with all heads in one head block (default) and DCP's own head_block = 1; blocks from DCP's
# heuristic, then fixed at DCP's dry-run 1024 and the finer 512 and 256 (causal). Prints markdown
# tables; the planning time is the plan's planning_time_s (generator + METIS + IR emission).
# usage: scripts/bench/dcp_planning.sh [path/to/cpsim]   (default build/app/cpsim)
set -euo pipefail
CPSIM=${1:-build/app/cpsim}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "| distribution | mask | head_block | seeds | block B chosen (tokens) | work blocks (max) | planning time max (s) | median (s) |"
echo "|---|---|---|---|---|---|---|---|"
run_row() { # dist mask head_block block(auto|N)
  local dist=$1 mask=$2 hb=$3 block=$4
  local times=() blocks="" extra=""
  [ "$block" != auto ] && extra=", \"block\": $block"
  for seed in 1 2 3 4 5; do
    cat > "$TMP/s.json" <<JSON
{"hardware": "dgx-h100:8",
 "workload": {"seq_lens": {"distribution": "$dist", "total_tokens": 131072, "seed": $seed},
          "heads": 8, "kv_heads": 2, "head_dim": 128, "dtype": "bf16", "mask": {"kind": "$mask"}},
 "parallel": {"scheme": "dcp", "cp": 64, "head_block": $hb$extra},
 "pass": "fwd"}
JSON
    taskset -c 0 "$CPSIM" plan "$TMP/s.json" -o "$TMP/p.json" > /dev/null
    times+=("$(/usr/bin/python3 -c "import json; print(json.load(open('$TMP/p.json'))['planning_time_s'])")")
    blocks="$blocks $(/usr/bin/python3 -c "
import json; s=json.load(open('$TMP/p.json'))['schedule']
segs=[g for r in s['ranks'] for o in r['ops'] if o['kind']=='attention' for g in o['segments']]
print(f\"{len(segs)}:{max(g['q'][1]-g['q'][0] for g in segs)}\")")"
  done
  /usr/bin/python3 - "$dist" "$mask" "$hb" "${times[*]}" "$blocks" <<'PY'
import statistics, sys
dist, mask, hb, times, blocks = sys.argv[1:]
t = [float(x) for x in times.split()]
b = [int(x.split(":")[0]) for x in blocks.split()]
B = sorted({int(x.split(":")[1]) for x in blocks.split()})
print(f"| {dist} | {mask} | {hb} | 1-5 | {', '.join(map(str, B))} | {max(b)} | {max(t):.3f} | {statistics.median(t):.3f} |")
PY
}
for dist in longalign longdatacollections; do
  for mask in causal lambda shared_question causal_blockwise; do
    for hb in 8 1; do
      run_row "$dist" "$mask" "$hb" auto
    done
  done
done
echo
echo "Fixed block sizes (causal):"
echo
echo "| distribution | mask | head_block | seeds | block B (tokens) | work blocks (max) | planning time max (s) | median (s) |"
echo "|---|---|---|---|---|---|---|---|"
for dist in longalign longdatacollections; do
  for block in 1024 512 256; do
    for hb in 8 1; do
      run_row "$dist" causal "$hb" "$block"
    done
  done
done
