#!/usr/bin/env bash
# Writes the predicted-vs-measured validation scenarios of issues 5 and 8 into
# scenarios/validation/h200x<N>/: fwd_bwd, causal and full masks, 32k..512k tokens, one file per
# (scheme, mask, length), so that `cpsim validate scenarios/validation/h200x4` runs a whole grid.
# Generated files are committed; rerun this script after changing the grid.
# Usage: scripts/gen_validation_scenarios.sh [gpus...]   (default: 2 4 8)
set -euo pipefail
cd "$(dirname "$0")/.."

lengths=(32768 65536 131072 262144 524288)
masks=(causal full)

# parallel block per scheme and GPU count: hybrids use both degrees above 1 where the count allows
parallel_for() {
  local scheme=$1 n=$2
  case $scheme in
    ring|zigzag|ulysses) echo "{\"scheme\": \"$scheme\", \"cp\": $n}" ;;
    usp) echo "{\"scheme\": \"usp\", \"cp\": $n, \"ulysses_degree\": 2, \"ring_degree\": $((n / 2)), \"ring_variant\": \"zigzag\"}" ;;
    loongtrain)
      local window=1
      [ "$n" -ge 8 ] && window=2
      echo "{\"scheme\": \"loongtrain\", \"cp\": $n, \"head_degree\": 2, \"context_degree\": $((n / 2)), \"window_size\": $window}" ;;
  esac
}

for n in "${@:-2 4 8}"; do
  for gpus in $n; do
    rm -rf "scenarios/validation/h200x$gpus"
    dir=scenarios/validation/h200x$gpus
    mkdir -p "$dir"
    schemes=(ring zigzag ulysses)
    [ "$gpus" -ge 4 ] && schemes+=(usp loongtrain)
    for scheme in "${schemes[@]}"; do
      scheme_masks=("${masks[@]}")
      [ "$scheme" = loongtrain ] && scheme_masks=(causal) # InternEvo's double ring asserts causal
      for mask in "${scheme_masks[@]}"; do
        for s in "${lengths[@]}"; do
          name="${scheme}_${mask}_$((s / 1024))k"
          cat >"$dir/$name.json" <<JSON
{
  "name": "$name-h200x$gpus",
  "description": "Validation grid (scripts/gen_validation_scenarios.sh): $scheme, $mask mask, one $((s / 1024))k-token sequence, Llama-3-8B-like heads, fwd_bwd on $gpus NVLink-connected H200s.",
  "hardware": "h200-sxm-$gpus",
  "workload": {"seq_lens": [$s], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16", "mask": "$mask"},
  "parallel": $(parallel_for "$scheme" "$gpus"),
  "pass": "fwd_bwd"
}
JSON
        done
      done
    done
    echo "wrote $(ls "$dir" | wc -l) scenarios to $dir"
  done
done
