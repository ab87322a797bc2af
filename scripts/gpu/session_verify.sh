#!/usr/bin/env bash
# One lent single-GPU machine, one call: the first GPU run of everything built on 2026-12-07 without a GPU, each stage
# bounded so that what finished comes back when a later stage is cut short (the call's limit is 600 s):
#   kernels   cpsim_wgmma_layout_tests (the wgmma operand layouts alone), then cpsim_kernel_gpu_tests (reference,
#             mma and wgmma against the fp64 oracle) and the planner tests                       (run_all.sh tests)
#   speed     cpsim_kernel_bench at S = 16k, dense and density 0.1, causal and not, fwd and bwd, --impl wgmma
#             and --impl mma on the same machine (the whole matrix and the PyTorch peers: session_1gpu.sh bench)
#   loopback  the --loopback GPU tests (2 and 4 ranks on this GPU, spin-kernel signalling, no-fit, hang)
#   sparse    the backend's sparse kernels against CPU arithmetic, then `cpsim run --check` of scenarios/sparse_checks
#             (PIT, DSV, TE p2p, CQS, DCP; more ranks than GPUs with --loopback)       (run_sparse_checks.sh)
# Usage (device, carry gpu-pack.tar.xz): OUT=... scripts/gpu/session_verify.sh [stage ...]   (default: all four)
# Limits per stage (s): CPSIM_VERIFY_KERNELS_S (200), _SPEED_S (90), _LOOPBACK_S (120), _SPARSE_S (170).
# What to do with the answers (kernels/README.md, docs/backend.md): wgmma passing its tests is what lets Impl::FAST
# move to it (attention_dispatch.cpp, fast_impl); then calibrate it: CPSIM_KERNEL_IMPL=wgmma session_1gpu.sh ...
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
mkdir -p "$OUT"
. scripts/gpu/pack_env.sh
export PACK
{ gpu_header; echo "command: $0 $*"; } | tee "$OUT/env.txt"

stage() { # name seconds command...: console and files of the command go to a scratch OUT, tarred into $OUT
  local name=$1 limit=$2; shift 2
  local d; d=$(mktemp -d)
  local t0; t0=$(date +%s)
  OUT=$d timeout -k 5 "$limit" "$@" >"$d/console.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $(($(date +%s) - t0))s (limit ${limit}s)" | tee -a "$OUT/summary.txt"
  grep -E "rc=|passed|failed|FAIL|ok$|WRONG|error|TFLOP" "$d/console.log" | cut -c1-160 | tail -n 24 | tee -a "$OUT/summary.txt"
  tar -C "$d" -czf "$OUT/$name.tgz" .
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(kernels speed loopback sparse)
for s in "${stages[@]}"; do
  case $s in
    kernels) stage kernels "${CPSIM_VERIFY_KERNELS_S:-200}" scripts/gpu/run_all.sh tests ;;
    speed) stage speed "${CPSIM_VERIFY_SPEED_S:-90}" bash -c 'for impl in wgmma mma; do
        "$PACK/bin/cpsim_kernel_bench" --impl $impl --seqs 16384 --densities 1,0.1 --budget-s 0.3 --out "$OUT/$impl"
        echo "bench $impl rc=$?"; rm -rf "$OUT/$impl/layouts"; done' ;;
    loopback) stage loopback "${CPSIM_VERIFY_LOOPBACK_S:-120}" env CPSIM_LOOPBACK_TESTS_S=$((${CPSIM_VERIFY_LOOPBACK_S:-120} - 10)) \
      scripts/gpu/loopback_checks.sh tests ;;
    sparse) stage sparse "${CPSIM_VERIFY_SPARSE_S:-170}" env CPSIM_RUN_LIMIT_S=60 scripts/gpu/run_sparse_checks.sh ;;
    *) echo "unknown stage '$s' (kernels speed loopback sparse)" >&2; exit 2 ;;
  esac
done
ls -la "$OUT"
