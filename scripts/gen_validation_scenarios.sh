#!/usr/bin/env bash
# Writes the predicted-vs-measured validation scenarios of issues 5 and 8 into
# scenarios/validation/<gpu>x<N>/, one file per (scheme, mask, length), so that
# `cpsim validate scenarios/validation/h100x4` runs a whole grid on a lent machine of that kind.
#   <dir>/            what the real-GPU backend executes: ring, zigzag, Ulysses and, from 4 GPUs, USP and
#                     LoongTrain with both degrees above 1; fwd_bwd, causal and full, 32k..512k
#   <dir>/sim_only/   what it has not run on a GPU yet (DSV, CQS): planned, simulated and predicted only, kept apart
#                     because `cpsim validate <dir>` reads no subfolder (README.md there says why)
# H100 grids exist beside the H200 ones because 4- and 8-GPU machines are mostly lent as H100s, and a
# prediction for the other GPU would compare two different machines.
# Generated files are committed; rerun this script after changing the grid.
# Usage: scripts/gen_validation_scenarios.sh [grid...]
#   grid: h200x2 h200x4 h200x8 h100x2 h100x4 h100x8 (the default: all), or N meaning h200xN
set -euo pipefail
cd "$(dirname "$0")/.."

lengths=(32768 65536 131072 262144 524288)
masks=(causal full)
# DSV's video-DiT setting (DSV section 3): every head keeps its own 5..20% of 128-token key blocks
# (80..95% sparsity), bidirectional. 32 MHA heads, since DSV places heads by KV group.
dsv_densities="0.20, 0.05, 0.15, 0.05, 0.10, 0.05, 0.20, 0.08, 0.12, 0.05, 0.18, 0.06, 0.10, 0.05, 0.15, 0.07,
                                           0.06, 0.18, 0.05, 0.12, 0.08, 0.20, 0.05, 0.10, 0.07, 0.15, 0.05, 0.20, 0.06, 0.10, 0.05, 0.12"
llama_heads='"heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16"'
video_heads='"heads": 32, "kv_heads": 32, "head_dim": 128, "dtype": "bf16"'

# parallel block of a GPU-runnable scheme: hybrids use both degrees above 1 where the count allows
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

# Longest DSV sequence that fits the GPU: the video layer keeps 32 MHA heads (4x the Llama grid's KV)
# and the gathered K/V stay alive for the backward. At 512k the analytic engine's peak per rank is
# 120..260 GiB on 2 and 4 GPUs (`cpsim simulate` refuses them), more than an H100 (79.6 GiB) or, on 2, an
# H200 (139 GiB) holds; on 8 GPUs it is 63..77 GiB.
dsv_max_tokens() { case $1 in h100x2|h200x2|h100x4) echo 262144 ;; *) echo 524288 ;; esac; }

# CQS needs W = q^2+q+1 workers (a perfect difference set mod W): 3 on 4 GPUs, 7 on 8 with one idle
cqs_workers() { case $1 in 4) echo 3 ;; 8) echo 7 ;; *) echo 0 ;; esac; }

# write FILE NAME DESCRIPTION HW HEADS MASK PARALLEL PASS TOKENS (a multi-line mask goes on its own line)
write() {
  local sep=' '
  [[ $6 == *$'\n'* ]] && sep=$'\n               '
  cat >"$1" <<JSON
{
  "name": "$2",
  "description": "$3",
  "hardware": "$4",
  "workload": {"seq_lens": [$9], $5,$sep"mask": $6},
  "parallel": $7,
  "pass": "$8"
}
JSON
}

sim_only_readme() { # dir n
  local dir=$1 n=$2 w
  w=$(cqs_workers "$n")
  {
    echo "# Simulation-only validation scenarios ($(basename "$(dirname "$dir")")/$(basename "$dir"))"
    echo
    echo "Written by \`scripts/gen_validation_scenarios.sh\`. The real-GPU backend builds exec plans for these"
    echo "(since the sparse-backend branch: per-head layouts, the predictor's compute ops, gather-style launches and"
    echo "n-way merges), but none has passed \`cpsim run --check\` on a GPU yet, so they stay out of the measured grid:"
    echo "\`cpsim validate\` reads the \`.json\` files of the folders it is given, not their subfolders, and"
    echo "\`scripts/gpu/run_calibrate.sh validate\` passes the parent folder. Their small \`--check\` versions are"
    echo "\`scenarios/sparse_checks/\` (\`scripts/gpu/run_sparse_checks.sh\`); once those pass on GPUs, move the"
    echo "lengths that fit the GPU up. \`tests/hardware/validation_grid_test.cpp\` checks that every scenario of the"
    echo "parent folder builds an exec plan that fits the GPU and that these build one too."
    echo
    echo "| files | why they are simulation-only |"
    echo "|---|---|"
    echo "| \`dsv_*\` (DSV, HCP, SCP$([ "$n" -ge 4 ] && echo " and $((n / 2)) HCP x 2 SCP"), sparsity-aware, fwd_bwd) | not yet checked on a GPU (per-head layouts, head lists, the predictor kernels); the longest lengths also need more memory than the GPU has (256k on 2 GPUs: about 72 GiB of buffers per rank) |"
    [ "$w" -gt 0 ] &&
      echo "| \`cqs_*\` (CQS, W = $w of $n GPUs, forward only: the CQS code has no backward) | not yet checked on a GPU (material buffers, the $w-way merge) |"
    echo
    echo "Predictions: \`scripts/predict_folder.sh $dir\` (committed under \`results/predictions/\`)."
    echo "The DSV layouts are random per head (seeded): DSV's shared critical KV, where adjacent queries"
    echo "need mostly the same key blocks, would favour sparse SCP more (see docs/schemes.md, dsv caveats)."
    echo "CQS uses \`scores: flash\`: materialized fp32 scores of a 512k sequence would not fit any GPU."
    [ "$(dsv_max_tokens "$(basename "$(dirname "$dir")")")" -lt 524288 ] &&
      echo "DSV stops at 256k here: at 512k a rank would need more than the GPU's memory (120..260 GiB, analytic peak)."
    return 0
  } >"$dir/README.md"
}

gen_grid() { # grid name, e.g. h100x4
  local grid=$1 gpu n hw label dir sdir
  gpu=${grid%x*} n=${grid#*x}
  case $gpu in h100|h200) ;; *) echo "error: grid '$grid': GPU must be h100 or h200" >&2; exit 2 ;; esac
  case $n in 2|4|8) ;; *) echo "error: grid '$grid': GPU count must be 2, 4 or 8" >&2; exit 2 ;; esac
  hw=$gpu-sxm-$n label=${gpu^^}s dir=scenarios/validation/$grid sdir=$dir/sim_only
  rm -rf "$dir"
  mkdir -p "$sdir"

  local schemes=(ring zigzag ulysses)
  [ "$n" -ge 4 ] && schemes+=(usp loongtrain)
  local scheme mask s k name scheme_masks
  for scheme in "${schemes[@]}"; do
    scheme_masks=("${masks[@]}")
    [ "$scheme" = loongtrain ] && scheme_masks=(causal) # InternEvo's double ring asserts causal
    for mask in "${scheme_masks[@]}"; do
      for s in "${lengths[@]}"; do
        k=$((s / 1024)) name="${scheme}_${mask}_${k}k"
        write "$dir/$name.json" "$name-$grid" \
          "Validation grid (scripts/gen_validation_scenarios.sh): $scheme, $mask mask, one ${k}k-token sequence, Llama-3-8B-like heads, fwd_bwd on $n NVLink-connected $label." \
          "$hw" "$llama_heads" "\"$mask\"" "$(parallel_for "$scheme" "$n")" fwd_bwd "$s"
      done
    done
  done

  # DSV: pure HCP, pure SCP and, from 4 GPUs, HCP over n/2 consecutive ranks x SCP over 2 (both above 1)
  local variants=("hcp $n 1" "scp 1 $n") v tag hcp scp
  [ "$n" -ge 4 ] && variants+=("hybrid $((n / 2)) 2")
  for v in "${variants[@]}"; do
    read -r tag hcp scp <<<"$v"
    for s in "${lengths[@]}"; do
      [ "$s" -le "$(dsv_max_tokens "$grid")" ] || continue
      k=$((s / 1024)) name="dsv_${tag}_video_${k}k"
      write "$sdir/$name.json" "$name-$grid" \
        "Validation grid, simulation only (DSV: not yet checked on a GPU): sparsity-aware DSV with hcp = $hcp, scp = $scp on a video-DiT-like layer, one ${k}k-token sequence, 32 MHA heads keeping 5..20% of 128-token key blocks each (bidirectional), fwd_bwd on $n NVLink-connected $label." \
        "$hw" "$video_heads" "{\"kind\": \"block_sparse\", \"block\": 128, \"seed\": 7,
                        \"head_densities\": [$dsv_densities]}" \
        "{\"scheme\": \"dsv\", \"cp\": $n, \"hcp\": $hcp, \"scp\": $scp, \"sparsity_aware\": true}" fwd_bwd "$s"
    done
  done

  local w
  w=$(cqs_workers "$n")
  if [ "$w" -gt 0 ]; then
    for mask in "${masks[@]}"; do
      for s in "${lengths[@]}"; do
        k=$((s / 1024)) name="cqs_${mask}_${k}k"
        write "$sdir/$name.json" "$name-$grid" \
          "Validation grid, simulation only (CQS: not yet checked on a GPU): CQS-Attention with W = $w workers on $n NVLink-connected $label$([ "$w" -lt "$n" ] && echo " ($((n - w)) idle)"), $mask mask, one ${k}k-token sequence, Llama-3-8B-like heads, flash scores, forward only (the CQS code has no backward)." \
          "$hw" "$llama_heads" "\"$mask\"" "{\"scheme\": \"cqs\", \"cp\": $w, \"scores\": \"flash\"}" fwd "$s"
      done
    done
  fi
  sim_only_readme "$sdir" "$n"
  echo "wrote $(ls "$dir"/*.json | wc -l) scenarios to $dir and $(ls "$sdir"/*.json | wc -l) to $sdir"
}

grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(h200x2 h200x4 h200x8 h100x2 h100x4 h100x8)
for g in "${grids[@]}"; do
  [[ $g =~ ^[0-9]+$ ]] && g=h200x$g
  gen_grid "$g"
done
