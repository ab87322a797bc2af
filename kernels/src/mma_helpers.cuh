// Tensor-core building blocks shared by the fast forward and backward kernels: cp.async tile loads
// into XOR-swizzled shared memory, ldmatrix, mma.sync m16n8k16 (fp32 accumulation) and packing of
// fp32 pairs into bf16/fp16 operands. Valid on sm_80 and sm_90.
#pragma once

#include "kernel_common.cuh"

#include <type_traits>

namespace cpsim::kernels::detail {

constexpr int kThreads = 128;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/** c += a * b for one 16x8x16 tile; a: 4 regs (16x16 row-major), b: 2 regs (16x8 col-major). */
template <class T> __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <class T> __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

/** Byte offset of 16-byte chunk `ch` of tile row `row` (rows of D 2-byte elements, XOR swizzle). */
template <int D> __device__ __forceinline__ uint32_t swz(int row, int ch) { return uint32_t(row * D * 2 + ((ch ^ (row & 7)) << 4)); }

/** Copies rows [0, 64) of a tile into shared memory; rows beyond tile.n are zero-filled. */
template <class T, int D> __device__ __forceinline__ void load_tile(uint32_t s, const HeadTensor& t, const TileRange& tr, int head) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kTileRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const T* src = at<T>(t, tr.row0 + (r < tr.n ? r : 0), head, D) + c * 8;
    cp_async16(s + swz<D>(r, c), src, r < tr.n ? 16 : 0);
  }
}


} // namespace cpsim::kernels::detail
