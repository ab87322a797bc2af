#!/usr/bin/env bash
# One lent 4- or 8-GPU machine in few, full calls (issue 8; docs/calibration.md "On a lent 4- or 8-GPU machine"):
#   scripts/gpu/session_node.sh HW setup        call 1: --check on 2 GPUs (every schedule the backend runs) and on
#                                              all N GPUs (run_backend.sh checks_n), failure injection, NCCL and
#                                              overlap sweeps with N peers, joined with the committed one-GPU kernel
#                                              sweep of the same GPU model into the profile HW.json
#   scripts/gpu/session_node.sh HW checks       --check on all N GPUs, then on 2 (after a fix; CPSIM_CHECK_FILTER)
#   scripts/gpu/session_node.sh HW validate [--only GLOB]... [validate options]
#                                              later calls: run_calibrate.sh validate with that profile
# HW: h100-sxm-4, h200-sxm-8, ... (what the machine really has), or auto to read it off nvidia-smi. The profile of call 1 is kept on the machine in
# gpu-state/ (ignored, so it survives between calls while the machine stays warm) and returned in $OUT; a later
# call on a fresh machine uses hardware/profiles/HW.json instead (put the returned one there first).
# Each stage is bounded (CPSIM_CHECKS_S, CPSIM_FAILURES_S, CPSIM_CALIB_S) so that what finished still comes back;
# $OUT gets one tarball per stage plus the profile: at most 5 files per call.
set -uo pipefail
cd "$(dirname "$0")/../.."
HW=${1:?hardware name, e.g. h100-sxm-4, or auto}; STEP=${2:?setup or validate}; shift 2
: "${OUT:?set OUT}"
if [ "$HW" = auto ]; then # lent kinds may come as another GPU than named: take what nvidia-smi reports
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
  count=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
  case $name in *H200*) HW=h200-sxm-$count ;; *H100*) HW=h100-sxm-$count ;; *) echo "unknown GPU '$name'" >&2; exit 2 ;; esac
  echo "hardware: $HW ($count x $name)"
fi
[[ $HW =~ ^(h100|h200)-sxm-([248])$ ]] || { echo "session_node.sh: HW must be h100|h200-sxm-2|4|8, not '$HW'" >&2; exit 2; }
GPU=${BASH_REMATCH[1]} N=${BASH_REMATCH[2]}
. scripts/gpu/pack_env.sh
CPSIM="$PACK/bin/cpsim"
mkdir -p gpu-state
FINAL_OUT=$OUT

stage() { # name seconds command...: runs the command with OUT pointing at a scratch folder, tars that into $FINAL_OUT
  local name=$1 limit=$2; shift 2
  local d; d=$(mktemp -d)
  local t0; t0=$(date +%s)
  OUT=$d CPSIM_WORK_DIR=${CPSIM_WORK_DIR:-work} timeout -k 5 "$limit" "$@" >"$d/console.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $(( $(date +%s) - t0 ))s (limit ${limit}s)"
  grep -E "rc=[1-9]|error" "$d/console.log" | cut -c1-220 | head -n 25
  tar -C "$d" -czf "$FINAL_OUT/$name.tgz" .
}

case $STEP in
  setup)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sort | uniq -c
    stage checks "${CPSIM_CHECKS_S:-130}" scripts/gpu/run_backend.sh checks
    CPSIM_CHECK_CP=$N stage checks_n "${CPSIM_CHECKS_N_S:-90}" scripts/gpu/run_backend.sh checks_n
    stage failures "${CPSIM_FAILURES_S:-80}" scripts/gpu/run_backend.sh failures
    KERNEL_RAW=results/calibration/2026-11-27_h100-sxm-1/raw.json
    if [ "$GPU" = h100 ] && [ -f "$KERNEL_RAW" ]; then # kernels were swept on one H100 already: links and overlap only
      stage calibration "${CPSIM_CALIB_S:-200}" scripts/gpu/run_calibrate.sh calibrate "$HW" --sweeps comm,overlap --reps 5 --warmup 2
      tar -xzf "$FINAL_OUT/calibration.tgz" -C gpu-state ./"raw_$HW.json" 2>/dev/null
      "$CPSIM" calibrate --hardware "$HW" --from-raw "$KERNEL_RAW" --from-raw "gpu-state/raw_$HW.json" \
        --out "gpu-state/$HW.json" 2>&1 | tail -n 5
    else # no kernel sweep of this GPU model yet: every sweep, quick grid
      stage calibration "${CPSIM_CALIB_S:-420}" scripts/gpu/run_calibrate.sh calibrate "$HW" --quick
      tar -xzf "$FINAL_OUT/calibration.tgz" -C gpu-state ./"$HW.json" 2>/dev/null
    fi
    [ -f "gpu-state/$HW.json" ] && cp "gpu-state/$HW.json" "$FINAL_OUT/" || echo "no profile for $HW was written"
    ;;
  checks) # --check again after a fix: all N GPUs first, then the 2-GPU set (CPSIM_CHECK_FILTER narrows both)
    CPSIM_CHECK_CP=$N stage checks_n "${CPSIM_CHECKS_N_S:-120}" scripts/gpu/run_backend.sh checks_n
    stage checks "${CPSIM_CHECKS_S:-200}" scripts/gpu/run_backend.sh checks
    ;;
  validate)
    PROFILE=gpu-state/$HW.json
    [ -f "$PROFILE" ] || PROFILE=hardware/profiles/$HW.json
    [ -f "$PROFILE" ] || { echo "no profile for $HW: run 'setup' first, or commit hardware/profiles/$HW.json" >&2; exit 2; }
    echo "profile: $PROFILE"
    # the work folder inside the stage's, so that the measured files of a run cut short still come back
    stage validate "${CPSIM_VALIDATE_S:-570}" scripts/gpu/run_calibrate.sh validate "$HW" "$PROFILE" "$@"
    tar -xzOf "$FINAL_OUT/validate.tgz" ./work/validate.log 2>/dev/null | tail -n 60
    ;;
  *) echo "usage: $0 HW setup | HW checks | HW validate [--only GLOB]... [validate options]" >&2; exit 2 ;;
esac
ls -la "$FINAL_OUT"
