#!/usr/bin/env bash
# Backend runs on a lent GPU machine, in two halves:
#   here:   scripts/gpu/run_backend.sh pack            = scripts/gpu/pack.sh (cpsim and the kernel binaries into gpu-pack/)
#   device: scripts/gpu/run_backend.sh checks|timing|failures|single   runs from gpu-pack/, logs and JSON into $OUT
#           (one tarball per stage plus runs_<stage>.log, as few files come back)
#   checks: `cpsim run --check` of every schedule the backend executes on 2 GPUs; checks_n: the same on
#   CPSIM_CHECK_CP (default 4) GPUs for the schemes whose ring or all-to-all grows with them; timing: timed 2-GPU runs with
#   CUPTI overhead; failures: injected death, hang, CUDA error, memory limit and real out-of-memory; single: 1 GPU.
# Every result records the command, the GPU, the date and the git SHA (in the JSON and in runs.log).
set -uo pipefail
cd "$(dirname "$0")/../.."
PACK=gpu-pack

pack() { scripts/gpu/pack.sh; }

scenario() { # name scheme cp tokens mask pass [extra parallel JSON] -> file
  python3 - "$@" <<'PY'
import json, os, sys
name, scheme, cp, tokens, mask, p = sys.argv[1:7]
extra = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
m = {"causal": {"kind": "causal"}, "full": {"kind": "full"},
     "sparse": {"kind": "block_sparse", "block": 128, "density": 0.3, "seed": 1, "causal": True},
     "window": {"kind": "sliding_window", "window": 3000}}[mask]
# the node's size: the memory check fits the plan to it; one-GPU runs name the GPU the machine has
hw = f"h200-sxm-{cp}" if int(cp) > 1 else os.environ.get("CPSIM_HW_1GPU", "h100-sxm-1")
print(json.dumps({"name": name, "hardware": hw, "parallel": {"scheme": scheme, "cp": int(cp), **extra}, "pass": p,
  "workload": {"seq_lens": [int(tokens)], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16", "mask": m}}))
PY
}

run_one() { # tag, then cpsim run arguments; CPSIM_CHECK_FILTER (a regex on the tag) narrows a stage to some runs
  local tag=$1; shift
  [[ $tag =~ ${CPSIM_CHECK_FILTER:-.} ]] || return 0
  local t0=$(date +%s.%N)
  # a bound on each run, so that one stuck run (a watchdog that fails to fire) cannot eat the stage's results
  timeout -k 5 "${CPSIM_RUN_LIMIT_S:-150}" "$PACK/bin/cpsim" run "$@" --json "$W/$tag.json" >"$W/$tag.log" 2>&1
  local rc=$?
  printf '%-44s rc=%-3s %6.1fs  %s\n' "$tag" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "cpsim run $*" | tee -a "$W/runs.log"
  tail -n 3 "$W/$tag.log" | sed 's/^/    /'
}

device() {
  . scripts/gpu/pack_env.sh
  case $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) in
    *H200*) export CPSIM_HW_1GPU=h200-sxm-1 ;; *) export CPSIM_HW_1GPU=h100-sxm-1 ;;
  esac
  W=$(work_dir)
  { gpu_header; nvidia-smi topo -m; } >"$W/runs.log" 2>&1
  mkdir -p "$W/sc"
  local extra=${CPSIM_RUN_EXTRA:---comm-only}
  if [ "$1" = checks ]; then # --check: every schedule the backend executes, against single-GPU attention
    while read -r scheme par; do
      local cases="causal:fwd causal:fwd_bwd"
      case $scheme in
        ring | zigzag | ulysses) cases="$cases full:fwd full:fwd_bwd sparse:fwd sparse:fwd_bwd window:fwd_bwd" ;;
        stripe | loongtrain) ;; # causal only, by design
        *) cases="$cases full:fwd_bwd" ;;
      esac
      for c in $cases; do
        local mask=${c%%:*} p=${c#*:}
        local tag="check-$scheme${par:+-$(echo "$par" | tr -dc 'a-z0-9')}-$mask-$p"
        scenario "$tag" "$scheme" 2 16384 "$mask" "$p" "${par:-"{}"}" >"$W/sc/$tag.json"
        run_one "$tag" "$W/sc/$tag.json" --check --reps 2 --warmup 1 --profile-reps 0 --timeout 60
      done
    done <<'LIST'
ring
zigzag
stripe
ulysses
te_p2p
te_allgather
te_a2a
usp {"ulysses_degree": 2}
usp {"ring_degree": 2}
loongtrain {"head_degree": 2}
loongtrain {"context_degree": 2}
LIST
  elif [ "$1" = checks_n ]; then # rings and all-to-alls over more peers, hybrids with both degrees above 1
    local n=${CPSIM_CHECK_CP:-4}
    while read -r scheme par; do
      for c in causal:fwd_bwd full:fwd_bwd sparse:fwd_bwd; do
        local mask=${c%%:*} p=${c#*:}
        case $scheme in
          stripe | loongtrain) [ "$mask" = causal ] || continue ;; # causal only, by design
          te_a2a) [ "$mask" != sparse ] || continue ;;             # TE's fused attention has no block-sparse mask
        esac
        local tag="check$n-$scheme${par:+-$(echo "$par" | tr -dc 'a-z0-9')}-$mask-$p"
        scenario "$tag" "$scheme" "$n" 32768 "$mask" "$p" "${par:-"{}"}" >"$W/sc/$tag.json"
        run_one "$tag" "$W/sc/$tag.json" --check --reps 2 --warmup 1 --profile-reps 0 --timeout 60
      done
    done <<LIST
ring
zigzag
stripe
ulysses
te_a2a
usp {"ulysses_degree": 2, "ring_degree": $((n / 2))}
loongtrain {"head_degree": 2, "context_degree": $((n / 2))}
LIST
  elif [ "$1" = timing ]; then # compute and communication timed, CUPTI profiling overhead on two GPUs
    for scheme in ring zigzag ulysses; do for tokens in 65536 131072; do
      scenario "$scheme-fwd_bwd-$tokens" $scheme 2 $tokens causal fwd_bwd >"$W/sc/$scheme-$tokens.json"
      run_one "$scheme-fwd_bwd-$tokens" "$W/sc/$scheme-$tokens.json" --reps 5 --warmup 2 --profile-reps 5 --timeout 60
    done; done
  elif [ "$1" = failures ]; then
    scenario fail ring 2 65536 causal fwd_bwd >"$W/sc/fail.json"
    run_one fail-die "$W/sc/fail.json" --comm-only --reps 2 --warmup 1 --profile-reps 0 --inject die:1:3 --timeout 20
    run_one fail-cuda "$W/sc/fail.json" --comm-only --reps 2 --warmup 1 --profile-reps 0 --inject cuda:0:2 --timeout 20
    run_one fail-oom-limit "$W/sc/fail.json" --comm-only --memory-limit 1000000 --timeout 20
    scenario huge ring 2 33554432 causal fwd_bwd >"$W/sc/huge.json"
    run_one fail-oom-real "$W/sc/huge.json" --comm-only --timeout 20
    scenario huge-compute ring 2 4194304 causal fwd_bwd >"$W/sc/huge-compute.json"
    run_one fail-oom-real-compute "$W/sc/huge-compute.json" --timeout 20
    # last: it hung past 150 s on 2 H100s (2026-11-27) before per-run limits existed
    CPSIM_RUN_LIMIT_S=90 run_one fail-hang "$W/sc/fail.json" --comm-only --reps 2 --warmup 1 --profile-reps 0 --inject hang:1 --timeout 10
  else
    for scheme in ring zigzag ulysses; do for p in fwd fwd_bwd; do
      scenario "$scheme-$p-1gpu" $scheme 1 32768 causal $p >"$W/sc/$scheme-$p-1gpu.json"
      run_one "$scheme-$p-1gpu" "$W/sc/$scheme-$p-1gpu.json" $extra --reps 10 --warmup 3 --profile-reps 10
    done; done
  fi
  tar -C "$W" -czf "$OUT/backend_$1.tgz" . && cp "$W/runs.log" "$OUT/runs_$1.log"
}

case "${1:-}" in
  pack) pack ;;
  checks | checks_n | timing | failures | single) device "$1" ;;
  *) echo "usage: $0 pack | checks | checks_n | timing | failures | single" >&2; exit 2 ;;
esac
