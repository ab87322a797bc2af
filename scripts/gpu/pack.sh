#!/usr/bin/env bash
# Builds every GPU binary here (no GPU needed) and packs them, with the shared libraries they need
# beyond what a GPU machine has (CUDA 13, NCCL, the C++ runtime), into gpu-pack/ (ignored by git):
#   gpu-pack/bin/   cpsim, cpsim_wgmma_layout_tests, cpsim_kernel_gpu_tests, cpsim_kernel_plan_tests, cpsim_kernel_bench,
#                   cpsim_loopback_gpu_tests, cpsim_backend_gpu_tests
#   gpu-pack/lib/   non-system shared libraries (e.g. SimGrid, Boost pieces)
#   gpu-pack/GIT_SHA
# Kernels are compiled for sm_80 and sm_90a. Ship the folder with the repository (device `carry`:
# gpu-pack, or the smaller gpu-pack.tar.xz, which run_all.sh unpacks) and run scripts/gpu/run_all.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${CPSIM_GPU_BUILD:-build-gpu}
PACK=gpu-pack
TARGETS=${CPSIM_PACK_TARGETS:-cpsim cpsim_wgmma_layout_tests cpsim_kernel_gpu_tests cpsim_kernel_plan_tests cpsim_kernel_bench cpsim_loopback_gpu_tests cpsim_backend_gpu_tests}
declare -A WHERE=([cpsim]=app [cpsim_wgmma_layout_tests]=tests/kernels [cpsim_kernel_gpu_tests]=tests/kernels [cpsim_kernel_plan_tests]=tests/kernels
                  [cpsim_kernel_bench]=kernels [cpsim_loopback_gpu_tests]=tests/hardware [cpsim_backend_gpu_tests]=tests/hardware)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE="${CPSIM_GPU_BUILD_TYPE:-Release}" -DCPSIM_WITH_CUDA=ON -DCPSIM_TESTS_O0=OFF >/dev/null
# one target at a time: nvcc is memory- and CPU-hungry on small machines
for t in $TARGETS; do cmake --build "$BUILD" --target "$t" -j"${CPSIM_JOBS:-2}"; done
rm -rf "$PACK" && mkdir -p "$PACK/bin" "$PACK/lib"
for t in $TARGETS; do cp "$BUILD/${WHERE[$t]}/$t" "$PACK/bin/"; done
strip "$PACK"/bin/*
for b in "$PACK"/bin/*; do
  ldd "$b" | awk '/=>/ {print $3}' |
    grep -Ev 'libc\.so|libm\.so|libstdc|libgcc|libpthread|libdl|librt|ld-linux|libcuda|libnccl|libcupti|libcudart' || true
done | sort -u | while read -r l; do [ -n "$l" ] && cp -L "$l" "$PACK/lib/"; done
git rev-parse --short=12 HEAD >"$PACK/GIT_SHA"
git diff --quiet HEAD || echo "dirty" >>"$PACK/GIT_SHA"
# One compressed archive as well: a lent machine's carry limit (64 MiB) is below the folder's size.
tar -C . -cJf "$PACK.tar.xz" "$PACK"
du -sh "$PACK" "$PACK.tar.xz"
