#!/usr/bin/env bash
# Calibration and validation on a lent GPU machine, in two halves (like run_backend.sh):
#   here:   scripts/gpu/pack.sh                                  builds cpsim with the backend into gpu-pack/ (+ .tar.xz)
#   device: scripts/gpu/run_calibrate.sh calibrate HW [--quick] [--sweeps comm]  sweeps -> $OUT/<HW>.json + raw
#           scripts/gpu/run_calibrate.sh validate HW PROFILE     validation scenarios -> $OUT/validation_<HW>/
# HW is a built-in description of the machine (h100-sxm-1, h200-sxm-2, ...). Everything lands in $OUT
# as one tarball plus the small files, since few files come back from the device; the profile records
# the GPU, the date and the git SHA, and calibrate.log the commands.
set -uo pipefail
cd "$(dirname "$0")/../.."
PACK=gpu-pack
: "${OUT:?set OUT to the folder whose files come back}"
[ -x "$PACK/bin/cpsim" ] || [ ! -f "$PACK.tar.xz" ] || tar -xJf "$PACK.tar.xz"
export LD_LIBRARY_PATH="$PWD/$PACK/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" NCCL_NVLS_ENABLE=0
CPSIM="$PACK/bin/cpsim"
[ -x "$CPSIM" ] || { echo "no $CPSIM: run 'scripts/gpu/pack.sh' first (here, not on the device)" >&2; exit 2; }

header() { { date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "git $(cat $PACK/GIT_SHA)"; } >"$1" 2>&1; }

# Validation scenarios off the calibration grid: H100 kernels (one GPU, generated here); on two GPUs
# the committed grid scenarios/validation/h200x2 (ring, zigzag, ulysses fwd_bwd, 32k..512k, causal
# and full) plus block-sparse ones generated here.
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
    for s in ("ring", "zigzag", "ulysses"):
        for t in (32768, 65536, 131072, 262144):
            put(f"{s}-sparse-{t}", s, 2, t, masks["sparse"])
PY
}

case "${1:-}" in
  calibrate)
    HW=${2:?hardware name}; shift 2
    W=$(mktemp -d); header "$W/calibrate.log"
    echo "$CPSIM calibrate --hardware $HW --out $OUT/$HW.json --raw-dir $W/raw $*" >>"$W/calibrate.log"
    "$CPSIM" calibrate --hardware "$HW" --out "$OUT/$HW.json" --raw-dir "$W/raw" "$@" 2>&1 | tee -a "$W/calibrate.log"
    rc=${PIPESTATUS[0]}
    cp "$W/calibrate.log" "$OUT/" ; [ -f "$W/raw/raw.json" ] && cp "$W/raw/raw.json" "$OUT/raw_$HW.json"
    tar -C "$W" -czf "$OUT/calibration_$HW.tgz" raw
    exit "$rc" ;;
  validate)
    HW=${2:?hardware name}; PROFILE=${3:?profile}
    W=$(mktemp -d); header "$W/validate.log"; scenarios "$W/sc" "$HW"
    # the PNG needs matplotlib; without it the CSV and JSON are still written (plot locally from the CSV)
    # the committed grid for this machine, up to CPSIM_VALIDATE_MAX_K thousand tokens (512k steps take
    # minutes each at 10 repetitions: more than one lent-machine command allows)
    GRID=""; [ "$HW" = h200-sxm-2 ] && GRID=scenarios/validation/h200x2
    if [ -n "$GRID" ]; then
      for f in "$GRID"/*.json; do
        k=$(basename "$f" .json | grep -o '[0-9]*k$' | tr -d k)
        [ -z "$k" ] || [ "$k" -le "${CPSIM_VALIDATE_MAX_K:-256}" ] && cp "$f" "$W/sc/"
      done
    fi
    echo "$CPSIM validate $W/sc --profile $PROFILE ${CPSIM_VALIDATE_ARGS:-}" >>"$W/validate.log"
    "$CPSIM" validate "$W/sc" --profile "$PROFILE" --out-dir "$W/validation_$HW" ${CPSIM_VALIDATE_ARGS:-} \
      --plot-script scripts/plot_validation.py 2>&1 | tee -a "$W/validate.log"
    rc=${PIPESTATUS[0]}
    cp "$W/validate.log" "$OUT/"; tar -C "$W" -czf "$OUT/validation_$HW.tgz" "validation_$HW" sc
    exit "$rc" ;;
  *) echo "usage: $0 calibrate HW [calibrate options] | validate HW PROFILE" >&2; exit 2 ;;
esac
