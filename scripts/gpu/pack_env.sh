# Sourced, from the repository root, by the scripts that run on a GPU machine: the pack's folder (unpacked from
# gpu-pack.tar.xz when only the archive was carried) and the environment its binaries need.
PACK=gpu-pack
[ -d "$PACK/bin" ] || [ ! -f "$PACK.tar.xz" ] || tar -xJf "$PACK.tar.xz"
export LD_LIBRARY_PATH="$PWD/$PACK/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" NCCL_NVLS_ENABLE=0
# A stage's working folder: $OUT/$CPSIM_WORK_DIR when set (session_node.sh sets it, so that a stage cut short from
# outside leaves its files in $OUT), else a fresh temporary folder.
work_dir() { if [ -n "${CPSIM_WORK_DIR:-}" ]; then mkdir -p "$OUT/$CPSIM_WORK_DIR" && echo "$OUT/$CPSIM_WORK_DIR"; else mktemp -d; fi; }
# The provenance every result log on a GPU machine starts with: date, GPUs, driver, the pack's git SHA.
gpu_header() { date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "git $(cat "$PACK/GIT_SHA")"; }
