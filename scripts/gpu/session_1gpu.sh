#!/usr/bin/env bash
# One lent single-GPU machine (H100 or H200) in one full call: everything issues 3 and 5 ask of one GPU,
# each stage bounded so that what finished still comes back when a later stage is cut short:
#   tests       kernel GPU tests against the fp64 oracle and the CPU planner tests (run_all.sh tests)
#   calibrate   every kernel sweep -> the profile <gpu>-sxm-1.json (run_calibrate.sh calibrate)
#   validate    the one-GPU kernel scenarios off the calibration grid with that profile (run_calibrate.sh validate)
#   heldout2    scenarios/kernels_heldout2 (chosen 2026-12-07, never measured) with that profile
#   heldout     scenarios/kernels_heldout (measured on 2026-12-02, since looked at: a repeat, not held out) likewise
#   bench       the issue-3 speed matrix (run_all.sh bench), then the PyTorch peers on CPSIM_PEER_SEQS
# Usage (device, carry gpu-pack.tar.xz): OUT=... scripts/gpu/session_1gpu.sh [stage ...]   (default: tests calibrate
# validate bench). Calibration plus the held-out checks, ~5.5 minutes on an H200 with the kernels of 2026-12-02:
#   OUT=... scripts/gpu/session_1gpu.sh calibrate heldout2 heldout validate
# The kernels that run are the kernel library's fast path, which its own switches choose (CPSIM_KERNEL_IMPL, see
# kernels/README.md); the profile and every measured file record which (kernel_build).
# Limits per stage: CPSIM_TESTS_S, CPSIM_CALIB_S, CPSIM_VALIDATE_S, CPSIM_HELDOUT_S, CPSIM_BENCH_S, CPSIM_PEERS_S
# (seconds). $OUT receives one tarball per stage plus the profile and summary.md: at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
. scripts/gpu/pack_env.sh
export PACK # the bench stage's inner shell needs it
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
case $name in *H200*) HW=h200-sxm-1 ;; *H100*) HW=h100-sxm-1 ;; *) echo "unknown GPU '$name'" >&2; exit 2 ;; esac
echo "hardware: $HW ($name), git $(cat "$PACK/GIT_SHA"), CPSIM_KERNEL_IMPL=${CPSIM_KERNEL_IMPL:-<unset>}"
FINAL_OUT=$OUT
STATE=$(mktemp -d)

stage() { # name seconds command...: the command writes into a scratch OUT, which is tarred into $FINAL_OUT
  local name=$1 limit=$2; shift 2
  local d; d=$(mktemp -d)
  local t0; t0=$(date +%s)
  OUT=$d timeout -k 5 "$limit" "$@" >"$d/console.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $(($(date +%s) - t0))s (limit ${limit}s)"
  grep -E "rc=|passed|failed|error|median|wrote" "$d/console.log" | cut -c1-200 | tail -n 12
  cp -r "$d" "$STATE/$name"
  tar -C "$d" -czf "$FINAL_OUT/$name.tgz" .
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests calibrate validate bench)
for s in "${stages[@]}"; do
  case $s in
    tests) stage tests "${CPSIM_TESTS_S:-120}" scripts/gpu/run_all.sh tests ;;
    calibrate)
      # 89 kernel plans (~120 s of sweeps on an H200 with the kernels of 2026-12-02) and the fit (search over
      # tiles, launch layouts, occupancies; tens of seconds on 16 cores)
      stage calibrate "${CPSIM_CALIB_S:-270}" scripts/gpu/run_calibrate.sh calibrate "$HW" --reps 5 --warmup 2
      [ -f "$STATE/calibrate/$HW.json" ] && cp "$STATE/calibrate/$HW.json" "$FINAL_OUT/" ;;
    heldout2 | heldout)
      # a committed scenario folder measured with this session's profile (else the committed one); 10 repetitions
      profile=$STATE/calibrate/$HW.json
      [ -f "$profile" ] || profile=hardware/profiles/$HW.json
      dir=scenarios/kernels_$s
      stage "$s" "${CPSIM_HELDOUT_S:-90}" bash -c '
        . scripts/gpu/pack_env.sh
        { gpu_header; echo "CPSIM_KERNEL_IMPL=${CPSIM_KERNEL_IMPL:-<unset>}"; echo "$PACK/bin/cpsim validate $1 --profile $2 --no-plot"; } >"$OUT/validate.log" 2>&1
        "$PACK/bin/cpsim" validate "$1" --profile "$2" --out-dir "$OUT/validation" --no-plot >>"$OUT/validate.log" 2>&1
        rc=$?; cp "$2" "$OUT/profile_used.json"; tail -n 8 "$OUT/validate.log"; echo "validate rc=$rc"; exit $rc' \
        _ "$dir" "$profile" ;;
    validate)
      profile=$STATE/calibrate/$HW.json
      [ -f "$profile" ] || profile=hardware/profiles/$HW.json
      [ -f "$profile" ] || { echo "validate: no profile for $HW (calibrate first)"; continue; }
      stage validate "${CPSIM_VALIDATE_S:-120}" scripts/gpu/run_calibrate.sh validate "$HW" "$profile" ;;
    bench)
      # the bench's layouts feed the peers (same seed), so both run in one stage's folder
      stage bench "${CPSIM_BENCH_S:-200}" bash -c '
        W=$OUT; scripts/gpu/run_all.sh bench >"$W/bench_stage.log" 2>&1
        tar -xzf "$W/kernels_bench.tgz" -C "$W" ./kernels/bench.json ./env.txt 2>/dev/null
        if [ -n "${CPSIM_PEER_SEQS:-}" ]; then
          "$PACK/bin/cpsim_kernel_bench" --out "$W/lay" --passes fwd --reps 1 --warmup 0 --seqs "$CPSIM_PEER_SEQS" >/dev/null 2>&1
          timeout -k 5 "${CPSIM_PEERS_S:-150}" python3 scripts/gpu/bench_peers.py --layouts "$W/lay/layouts" --out "$W/peers" \
            --seqs "$CPSIM_PEER_SEQS" >"$W/peers.log" 2>&1; echo "peers rc=$?"
          rm -rf "$W/lay"
        fi
        p=""; [ -f "$W/peers/peers.json" ] && p="$W/peers/peers.json"
        { sed "s/^/    /" "$W/env.txt"; echo; python3 scripts/gpu/bench_summary.py "$W/kernels/bench.json" $p; } >"$W/summary.md"
        grep -c "|" "$W/summary.md"'
      [ -f "$STATE/bench/summary.md" ] && cp "$STATE/bench/summary.md" "$FINAL_OUT/" ;;
    *) echo "usage: $0 [tests|calibrate|validate|heldout2|heldout|bench]..." >&2; exit 2 ;;
  esac
done
ls -la "$FINAL_OUT"
