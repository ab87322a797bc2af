#!/usr/bin/env bash
# Calibration and validation on a lent GPU machine, in two halves (like run_backend.sh):
#   here:   scripts/gpu/pack.sh                                  builds cpsim with the backend into gpu-pack/ (+ .tar.xz)
#   device: scripts/gpu/run_calibrate.sh calibrate HW [--quick] [--sweeps comm]  sweeps -> $OUT/<HW>.json + raw
#                                                                (+ residuals_<HW>.csv, the kernel fit's in-sample errors)
#           scripts/gpu/run_calibrate.sh validate HW PROFILE [--only GLOB]... [validate options]
#                                                                validation scenarios -> $OUT/validation_<HW>.tgz
# HW is a built-in description of the machine (h100-sxm-1, h200-sxm-2, ...). Everything lands in $OUT
# as one tarball plus the small files, since few files come back from the device; the profile records
# the GPU, the date and the git SHA, and calibrate.log the commands.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder whose files come back}"
. scripts/gpu/pack_env.sh
CPSIM="$PACK/bin/cpsim"
[ -x "$CPSIM" ] || { echo "no $CPSIM: run 'scripts/gpu/pack.sh' first (here, not on the device)" >&2; exit 2; }

header() { gpu_header >"$1" 2>&1; }

# Validation scenarios off the calibration grid: H100 kernels (one GPU, generated here); on N = 2, 4
# or 8 GPUs block-sparse ring, zigzag and Ulysses over all N (generated here) plus the committed grid
# scenarios/validation/<gpu>xN of HW <gpu>-sxm-N (scripts/gen_validation_scenarios.sh: ring, zigzag,
# Ulysses, from 4 GPUs USP and LoongTrain; fwd_bwd, 32k..512k, causal and full). Its sim_only/
# subfolder (DSV, CQS: schemes the backend refuses) is not run.
grid_for() { # hw -> the committed grid folder, or nothing
  [[ $1 =~ ^(h100|h200)-sxm-([248])$ ]] && [ -d "scenarios/validation/${BASH_REMATCH[1]}x${BASH_REMATCH[2]}" ] &&
    echo "scenarios/validation/${BASH_REMATCH[1]}x${BASH_REMATCH[2]}"
  return 0
}
scenarios() { # dir hw
  python3 - "$1" "$2" <<'PY'
import json, os, sys
d, hw = sys.argv[1:3]
os.makedirs(d, exist_ok=True)
def put(name, scheme, cp, tokens, mask, heads=32, kv=8, dim=128, p="fwd_bwd"):
    json.dump({"name": name, "hardware": hw, "parallel": {"scheme": scheme, "cp": cp}, "pass": p,
               "workload": {"seq_lens": [tokens], "heads": heads, "kv_heads": kv, "head_dim": dim,
                            "dtype": "bf16", "mask": mask}}, open(f"{d}/{name}.json", "w"))
masks = {"causal": {"kind": "causal"}, "full": {"kind": "full"},
         "sparse": {"kind": "block_sparse", "block": 128, "density": 0.2, "seed": 11, "causal": True},
         "window": {"kind": "sliding_window", "window": 3000}}
if hw.endswith("-1"):
    for t in (6144, 12288, 24576, 49152):
        for m in masks:
            put(f"kernel-{m}-{t}", "ring", 1, t, masks[m], heads=24, kv=8)
else:
    n = int(hw.rsplit("-", 1)[1])
    for s in ("ring", "zigzag", "ulysses"):
        for t in (32768, 65536, 131072, 262144):
            put(f"{s}-sparse-{t}", s, n, t, masks["sparse"])
PY
}

case "${1:-}" in
  calibrate)
    HW=${2:?hardware name}; shift 2
    W=$(mktemp -d); header "$W/calibrate.log"
    echo "CPSIM_KERNEL_IMPL=${CPSIM_KERNEL_IMPL:-<unset>}" >>"$W/calibrate.log"
    echo "$CPSIM calibrate --hardware $HW --out $OUT/$HW.json --raw-dir $W/raw --residuals $OUT/residuals_$HW.csv $*" >>"$W/calibrate.log"
    "$CPSIM" calibrate --hardware "$HW" --out "$OUT/$HW.json" --raw-dir "$W/raw" --residuals "$OUT/residuals_$HW.csv" "$@" 2>&1 |
      tee -a "$W/calibrate.log"
    rc=${PIPESTATUS[0]}
    cp "$W/calibrate.log" "$OUT/" ; [ -f "$W/raw/raw.json" ] && cp "$W/raw/raw.json" "$OUT/raw_$HW.json"
    tar -C "$W" -czf "$OUT/calibration_$HW.tgz" raw
    exit "$rc" ;;
  validate)
    # Scenarios run: the generated ones and the grid of HW up to CPSIM_VALIDATE_MAX_K thousand tokens
    # (default 256: 512k steps take minutes each at 10 repetitions), then only those whose file name
    # matches one --only GLOB, if any is given (e.g. --only '*_32k*' --only '*-32768*'): a whole 4- or
    # 8-GPU grid takes longer than one device command may run (docs/calibration.md). Further options
    # (and CPSIM_VALIDATE_ARGS) go to `cpsim validate`, e.g. --warmup 1 --reps 3.
    HW=${2:?hardware name}; PROFILE=${3:?profile}; shift 3
    ONLY=(); PASS=()
    while [ $# -gt 0 ]; do
      case $1 in
        --only) ONLY+=("${2:?--only needs a file-name pattern}"); shift 2 ;;
        *) PASS+=("$1"); shift ;;
      esac
    done
    W=$(work_dir)
    header "$W/validate.log"; scenarios "$W/sc" "$HW"
    GRID=$(grid_for "$HW")
    if [ -n "$GRID" ]; then
      for f in "$GRID"/*.json; do
        k=$(basename "$f" .json | grep -o '[0-9]*k$' | tr -d k)
        [ -z "$k" ] || [ "$k" -le "${CPSIM_VALIDATE_MAX_K:-256}" ] && cp "$f" "$W/sc/"
      done
    fi
    if [ ${#ONLY[@]} -gt 0 ]; then
      for f in "$W"/sc/*.json; do
        keep=0
        for g in "${ONLY[@]}"; do
          # shellcheck disable=SC2053 # g is a pattern
          [[ $(basename "$f") == $g ]] && keep=1
        done
        [ "$keep" = 1 ] || rm "$f"
      done
    fi
    n=$(find "$W/sc" -name '*.json' | wc -l)
    [ "$n" -gt 0 ] || { echo "validate: no scenario left (grid ${GRID:-none}, --only ${ONLY[*]:-none})" | tee -a "$W/validate.log" >&2; exit 2; }
    echo "grid: ${GRID:-none for $HW}; $n scenarios: $(cd "$W/sc" && echo *.json)" | tee -a "$W/validate.log"
    echo "$CPSIM validate $W/sc --profile $PROFILE ${PASS[*]} ${CPSIM_VALIDATE_ARGS:-}" >>"$W/validate.log"
    # the PNG needs matplotlib, which lent GPU machines lack: ask for it only where it imports (else plot
    # here from the CSV: scripts/plot_validation.py validation.csv validation.png), so the stage's exit is validate's
    PLOT=(--no-plot); /usr/bin/python3 -c "import matplotlib" 2>/dev/null && PLOT=(--plot-script scripts/plot_validation.py)
    "$CPSIM" validate "$W/sc" --profile "$PROFILE" --out-dir "$W/validation_$HW" "${PASS[@]}" ${CPSIM_VALIDATE_ARGS:-} \
      "${PLOT[@]}" 2>&1 | tee -a "$W/validate.log"
    rc=${PIPESTATUS[0]}
    [ -n "${CPSIM_WORK_DIR:-}" ] || { cp "$W/validate.log" "$OUT/"; tar -C "$W" -czf "$OUT/validation_$HW.tgz" "validation_$HW" sc; }
    exit "$rc" ;;
  *) echo "usage: $0 calibrate HW [calibrate options] | validate HW PROFILE [--only GLOB]... [validate options]" >&2; exit 2 ;;
esac
