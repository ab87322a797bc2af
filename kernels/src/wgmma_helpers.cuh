// Hopper (sm_90a) building blocks of the wgmma attention kernels: the 128-byte-swizzled shared-memory
// tile layout the tensor cores read through matrix descriptors, the descriptors themselves, and the
// fences of the asynchronous warpgroup MMA. Everything here compiles only in the sm_90a pass
// (__CUDA_ARCH_FEAT_SM90_ALL); other passes see the layout constants alone.
//
// Tile layout ("SW128 panels"): a 64-row tile of D 2-byte elements is stored as D/64 panels of
// 64 rows x 128 bytes (8 KB each, 1024-byte aligned); 16-byte chunk c of row r lives in panel c/8 at
// r*128 + ((c%8) ^ (r%8))*16. This is the canonical 128B-swizzle atom (8 rows x 128 B) repeated down
// the rows, so one descriptor covers a 64 x 64 sub-matrix:
//  - K-major operand (rows = M or N, the reduction dimension along the row): start at
//    panel(k/64) + (k%64)*2 bytes for the 16-element k-step, stride-byte-offset 1024 (8 rows), the
//    leading-byte-offset unused;
//  - N-major operand (rows = the reduction dimension, e.g. V in P V): start at row k (k*128 bytes),
//    leading-byte-offset = the panel size (next 64 columns of N), stride-byte-offset 1024 (next 8 rows).
#pragma once

#include "mma_helpers.cuh"
#include "wgmma_ops.cuh"

namespace cpsim::kernels::detail {

constexpr int kPanelBytes = kTileRows * 128; // 64 rows of 64 two-byte elements
constexpr uint32_t kSwizzleAtomBytes = 1024; // 8 rows x 128 B: the descriptors' stride-byte-offset

/** Byte offset of 16-byte chunk `ch` of tile row `row` in the SW128 panel layout. */
__device__ __forceinline__ uint32_t sw128(int row, int ch) {
  return uint32_t((ch >> 3) * kPanelBytes + row * 128 + (((ch & 7) ^ (row & 7)) << 4));
}

/** Copies rows [0, 64) of a tile into the SW128 panel layout with cp.async; rows beyond tile.n are zero-filled. */
template <class T, int D, int kThreadsLoading = kThreads>
__device__ __forceinline__ void load_tile_sw128(uint32_t s, const HeadTensor& t, const TileRange& tr, int head, int tid) {
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = tid; i < kTileRows * kChunks; i += kThreadsLoading) {
    const int r = i / kChunks, c = i % kChunks;
    const T* src = at<T>(t, tr.row0 + (r < tr.n ? r : 0), head, D) + c * 8;
    cp_async16(s + sw128(r, c), src, r < tr.n ? 16 : 0);
  }
}

/** Shared-memory matrix descriptor, 128-byte swizzle (PTX ISA "matrix descriptor format"). */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = uint64_t((smem_addr & 0x3FFFF) >> 4);
  d |= uint64_t((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= uint64_t((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= uint64_t(1) << 62;
  return d;
}

/** Descriptor of k-step kk (16 elements) of a K-major 64-row tile. */
__device__ __forceinline__ uint64_t kmajor_desc(uint32_t tile, int kk) {
  return sw128_desc(tile + uint32_t((kk >> 2) * kPanelBytes + (kk & 3) * 32), 16, kSwizzleAtomBytes);
}

/** Descriptor of k-step kk (rows 16kk..16kk+15) of an N-major tile (the N columns run along the row). */
__device__ __forceinline__ uint64_t nmajor_desc(uint32_t tile, int kk) {
  return sw128_desc(tile + uint32_t(kk * 16 * 128), kPanelBytes, kSwizzleAtomBytes);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/** Makes this thread's generic-proxy writes to shared memory (cp.async, st.shared) visible to the tensor cores. */
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/** Keeps the compiler from moving accesses of accumulator registers across an asynchronous MMA region. */
template <int N> __device__ __forceinline__ void reg_fence(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+f"(r[i])::"memory");
}
#endif

/** Rounds a shared-memory pointer up to the 1024-byte alignment the swizzle atoms need. */
__device__ __forceinline__ uint32_t align1024(uint32_t a) { return (a + 1023u) & ~1023u; }

} // namespace cpsim::kernels::detail
