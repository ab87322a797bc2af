#!/usr/bin/env bash
# Runs on a GPU machine (CUDA 13, NCCL, PyTorch; nothing else) from gpu-pack/ (scripts/gpu/pack.sh):
#   scripts/gpu/run_all.sh [tests|bench|peers|backend|all]   (default all = tests, bench, peers)
# Results go to $OUT as few files (at most 8 come back from a lent machine): summary.md, tests.log,
# and kernels_<stage>.tgz with every log and JSON. Each file names the command, the GPU, the date and
# the git SHA. CPSIM_BENCH_ARGS adds arguments to cpsim_kernel_bench (and, for --seqs/--densities,
# pass the same ones to the peers in CPSIM_PEER_ARGS).
# A lent machine stops a command after 10 minutes: run the stages one by one there, and the peers
# one sequence length at a time (FlexAttention compiles one variant per mask), e.g.
#   scripts/gpu/run_all.sh tests; scripts/gpu/run_all.sh bench
#   CPSIM_PEER_ARGS="--seqs 4096" CPSIM_BENCH_ARGS="--seqs 4096" scripts/gpu/run_all.sh peers   (then 16384, 32768)
# and join them afterwards: scripts/gpu/bench_summary.py bench.json peers_*.json > summary.md
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/pack_env.sh
OUT=${OUT:-out}
mkdir -p "$OUT"
[ -x "$PACK/bin/cpsim_kernel_bench" ] || { echo "no $PACK/bin: run scripts/gpu/pack.sh first (and carry gpu-pack)" >&2; exit 2; }
W=$(mktemp -d)
stage=${1:-all}
{ date -u; echo "git $(cat $PACK/GIT_SHA)"; echo "command: $0 $*";
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; } >"$W/env.txt" 2>&1

tests() {
  { cat "$W/env.txt"; echo; "$PACK/bin/cpsim_kernel_plan_tests"; echo "plan tests rc=$?";
    "$PACK/bin/cpsim_wgmma_layout_tests"; echo "wgmma layout tests rc=$?";
    "$PACK/bin/cpsim_kernel_gpu_tests"; echo "gpu tests rc=$?"; } >"$OUT/tests.log" 2>&1 # in $OUT as it grows: a
  cp "$OUT/tests.log" "$W/tests.log"                                                     # run cut short keeps it
  grep -E "rc=|passed|failed|SKIP" "$W/tests.log"
}

bench() {
  "$PACK/bin/cpsim_kernel_bench" --out "$W/kernels" --budget-s 1 ${CPSIM_BENCH_ARGS:-} 2>&1 | tee "$W/bench.log"
}

peers() {
  local lay="$W/kernels/layouts"
  if [ ! -d "$lay" ]; then # the same layouts (same seed) without timing anything worth reporting
    "$PACK/bin/cpsim_kernel_bench" --out "$W/layouts_only" --passes fwd --reps 1 --warmup 0 ${CPSIM_BENCH_ARGS:-} >"$W/layouts.log" 2>&1
    lay="$W/layouts_only/layouts"
  fi
  python3 scripts/gpu/bench_peers.py --layouts "$lay" --out "$W/peers" ${CPSIM_PEER_ARGS:-} 2>&1 | tee "$W/peers.log"
}

summary() {
  [ -f "$W/kernels/bench.json" ] || return 0
  { cat "$W/env.txt" | sed 's/^/    /'; echo;
    python3 scripts/gpu/bench_summary.py "$W/kernels/bench.json" $( [ -f "$W/peers/peers.json" ] && echo "$W/peers/peers.json"); } >"$W/summary.md"
  cp "$W/summary.md" "$OUT/summary.md"
}

case "$stage" in
  tests) tests ;;
  bench) bench; summary ;;
  peers) peers; summary ;;
  backend) CPSIM_RUN_EXTRA="--check" scripts/gpu/run_backend.sh single ;;
  all) tests; bench; peers; summary ;;
  *) echo "usage: $0 [tests|bench|peers|backend|all]" >&2; exit 2 ;;
esac
rm -rf "$W/kernels/layouts" "$W/layouts_only" # large and reproducible from the seed
tar -C "$W" -czf "$OUT/kernels_$stage.tgz" .
ls -la "$OUT"
