#!/usr/bin/env bash
# One lent 2-GPU machine, one command (few, full calls save device time): everything the backend and the
# calibration need measured on two GPUs, with each stage bounded so that what finished still comes back.
#   scripts/gpu/session_2gpu.sh HW        (HW: h100-sxm-2 or h200-sxm-2, what the machine is)
# Stages: (1) run --check of every schedule the backend executes (run_backend.sh checks); (2) calibration
# sweeps of NCCL p2p/collectives and compute/comm overlap (the kernel sweeps run on one GPU:
# run_calibrate.sh calibrate <HW>-1; join them here with `cpsim calibrate --from-raw A --from-raw B`);
# (3) the validation grid run with `cpsim run --json` (ring/zigzag/ulysses, causal/full, 32k..128k, plus
# block-sparse), to be compared offline with `cpsim validate --measured`; (4) failure injection.
# $OUT receives at most 6 files: runs_checks.log, backend_checks.tgz, calibration_comm.tgz, measured_grid.tgz,
# runs_failures.log, backend_failures.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
HW=${1:?hardware name, e.g. h100-sxm-2}
: "${OUT:?set OUT}"
. scripts/gpu/pack_env.sh
CPSIM="$PACK/bin/cpsim"
header() { gpu_header; echo "command: $0 $*"; }

timeout -k 5 "${CPSIM_CHECKS_S:-200}" scripts/gpu/run_backend.sh checks | grep -c "rc=0" | sed 's/^/checks passed: /'

W=$(mktemp -d)
{ header; echo "$CPSIM calibrate --hardware $HW --sweeps comm,overlap --reps 5 --warmup 2"; } >"$W/calibrate.log" 2>&1
timeout -k 5 "${CPSIM_CALIB_S:-150}" "$CPSIM" calibrate --hardware "$HW" --sweeps comm,overlap --reps 5 --warmup 2 \
  --out "$W/profile_comm.json" --raw-dir "$W/raw" >>"$W/calibrate.log" 2>&1
echo "calibration rc=$?"; tail -n 12 "$W/calibrate.log" | tr '\r' '\n' | tail -n 12
tar -C "$W" -czf "$OUT/calibration_comm.tgz" calibrate.log raw/raw.json profile_comm.json raw/logs 2>/dev/null

M=$(mktemp -d); mkdir -p "$M/sc" "$M/measured"
header >"$M/runs.log" 2>&1
GRID=scenarios/validation/${HW%%-*}x2 # h100-sxm-2 -> h100x2, h200-sxm-2 -> h200x2: the grid of the machine it runs on
[ -d "$GRID" ] || { echo "no validation grid $GRID for hardware $HW" >&2; exit 2; }
for f in "$GRID"/*.json; do
  k=$(basename "$f" .json | grep -o '[0-9]*k$' | tr -d k)
  [ "${k:-0}" -le "${CPSIM_VALIDATE_MAX_K:-128}" ] && [[ $(basename "$f") =~ ${CPSIM_GRID_FILTER:-.} ]] && cp "$f" "$M/sc/"
done
python3 - "$M/sc" "$HW" "${CPSIM_SPARSE_TOKENS-32768,65536,131072}" <<'PY'
import json, sys
d, hw = sys.argv[1:3]
for s in ("ring", "zigzag", "ulysses"):
    for t in [int(x) for x in sys.argv[3].split(",") if x]:
        json.dump({"name": f"{s}-sparse-{t}", "hardware": hw, "parallel": {"scheme": s, "cp": 2}, "pass": "fwd_bwd",
                   "workload": {"seq_lens": [t], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16",
                                "mask": {"kind": "block_sparse", "block": 128, "density": 0.2, "seed": 11, "causal": True}}},
                  open(f"{d}/{s}-sparse-{t}.json", "w"))
PY
end=$(( $(date +%s) + ${CPSIM_GRID_S:-200} ))
for f in "$M"/sc/*.json; do
  [ "$(date +%s)" -lt "$end" ] || { echo "grid: out of time before $(basename "$f")" >>"$M/runs.log"; continue; }
  n=$(basename "$f" .json)
  timeout -k 5 120 "$CPSIM" run "$f" --reps 3 --warmup 1 --profile-reps 0 --timeout 60 --json "$M/measured/$n.json" >"$M/measured/$n.log" 2>&1
  echo "$n rc=$?" | tee -a "$M/runs.log"
done | grep -c "rc=0" | sed 's/^/grid runs passed: /'
tar -C "$M" -czf "$OUT/measured_grid.tgz" .

timeout -k 5 "${CPSIM_FAILURES_S:-150}" scripts/gpu/run_backend.sh failures | grep -E "rc=|error" | head -20
ls -la "$OUT"
