// The Hopper forward path (sm_90a): the same plan walk as the mma.sync kernel (a CTA of one
// warpgroup owns 64 query rows of one head and visits the plan's 64-key tiles), with both products on
// wgmma: S = Q K^T from shared memory (m64n64k16), O += P V with P in registers and V read N-major
// (m64nDk16). Within the warpgroup the softmax of tile e+1 runs while the tensor cores compute P_e V_e
// (FlashAttention-3's intra-warpgroup overlap); two CTAs per SM overlap each other's softmax and MMA.
//
// Iteration e starts with S_e complete in registers, P_{e-1} V_{e-1} possibly in flight, and the
// cp.async loads of K_{e+1} and V_e issued one iteration earlier:
//   1. mask + online softmax of S_e -> P_e (bf16/fp16 A fragments), row statistics;
//   2. wait for P_{e-1} V_{e-1}, rescale O;
//   3. wait for this thread's loads, proxy fence, barrier: K_{e+1} and V_e are visible to the tensor
//      cores and every warp is done with K_e and V_{e-1};
//   4. prefetch K_{e+2} into K_e's slot and V_{e+1} into V_{e-1}'s;
//   5. issue S_{e+1} = Q K_{e+1}^T and O += P_e V_e; wait for S_{e+1} only.
#include "cuda_check.hpp"
#include "launchers.hpp"
#include "wgmma_helpers.cuh"

namespace cpsim::kernels::detail {

namespace {

template <int D> constexpr int fwd_smem_bytes() { return 5 * kTileRows * D * 2 + 1024; } // Q, K x2, V x2, alignment

template <class T, int D>
__global__ void __launch_bounds__(kThreads, 2) fwd_wgmma_kernel(AttnArgs a, DevicePlan::View v, float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint4 smem[];
  constexpr int kTB = kTileRows * D * 2;
  constexpr int kS = 32;     // S accumulators per thread: 64 x 64 / 128
  constexpr int kO = D / 2;  // O accumulators per thread
  const int n_heads = a.head_end - a.head_begin;
  const int qt = v.q_order[blockIdx.x / n_heads], hi = int(blockIdx.x % n_heads), h = a.head_begin + hi, g = h / a.heads_per_kv;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const TileRange tq = v.q_tiles[qt];
  const int item = (v.head_slots == 1 ? 0 : hi) * v.n_q + qt;
  const int e0 = v.fwd_off[item], e1 = v.fwd_off[item + 1], n_full = v.fwd_nfull[item];
  const uint32_t sQ = align1024(smem_addr(smem));
  auto sK = [&](int slot) { return sQ + uint32_t(kTB * (1 + slot)); };
  auto sV = [&](int slot) { return sQ + uint32_t(kTB * (3 + slot)); };
  auto k_tile = [&](int e) { return v.k_tiles[v.fwd_idx[e]]; };

  float o[kO];
#pragma unroll
  for (int i = 0; i < kO; ++i)
    o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int r_lo = warp * 16 + (lane >> 2); // this thread's rows: r_lo and r_lo + 8
  const int64_t qpos[2] = {tq.pos0 + int64_t(r_lo) * tq.pos_stride, tq.pos0 + int64_t(r_lo + 8) * tq.pos_stride};

  // No visible key: O = 0, LSE = -inf, and out before any wgmma. (Left to the loop's exit path, the
  // compiler sinks O's zeroing into that path, inside the window where P V is in flight, and ptxas then
  // serializes every wgmma: warning C7515.)
  if (e0 == e1) {
    for (int r = 0; r < 2; ++r) {
      const int row = r_lo + 8 * r;
      if (row >= tq.n)
        continue;
      T* op = at<T>(a.o, tq.row0 + row, h, D) + (lane & 3) * 2;
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<uint32_t*>(op + dn * 8) = 0u;
      if ((lane & 3) == 0)
        *at<float>(a.lse, tq.row0 + row, h, 1) = -INFINITY;
    }
    return;
  }
  float s[kS];
  {
    load_tile_sw128<T, D>(sQ, a.q, tq, h, tid);
    const TileRange tk = k_tile(e0);
    load_tile_sw128<T, D>(sK(0), a.k, tk, g, tid);
    load_tile_sw128<T, D>(sV(0), a.v, tk, g, tid);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss_n64<T>(s, kmajor_desc(sQ, kk), kmajor_desc(sK(0), kk), kk > 0);
    wg_commit();
    if (e0 + 1 < e1)
      load_tile_sw128<T, D>(sK(1), a.k, k_tile(e0 + 1), g, tid);
    cp_async_commit();
    wg_wait<0>();
    reg_fence(s);
  }

  for (int e = e0; e < e1; ++e) {
    const int slot = (e - e0) & 1;
    // 1. mask and softmax of S_e
    if (e - e0 >= n_full) {
      const TileRange tk = k_tile(e);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int key = nt * 8 + (lane & 3) * 2 + (c & 1);
          if (key >= tk.n || r_lo + 8 * (c >> 1) >= tq.n || !plan_visible(v, tq.seq, qpos[c >> 1], tk.pos0 + int64_t(key) * tk.pos_stride))
            s[nt * 4 + c] = -INFINITY;
        }
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
        mx = fmaxf(mx, fmaxf(s[nt * 4 + 2 * r], s[nt * 4 + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx * scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new; // a row with nothing visible yet stays at 0
      corr[r] = exp2f(m[r] - base);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 2 * r; c < 2 * r + 2; ++c) {
          s[nt * 4 + c] = exp2f(fmaf(s[nt * 4 + c], scale_log2, -base));
          sum += s[nt * 4 + c];
        }
      l[r] = l[r] * corr[r] + sum;
      m[r] = m_new;
    }
    uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
    // 2. P_{e-1} V_{e-1} done: rescale O
    wg_wait<0>();
    reg_fence(o);
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      o[dn * 4 + 0] *= corr[0];
      o[dn * 4 + 1] *= corr[0];
      o[dn * 4 + 2] *= corr[1];
      o[dn * 4 + 3] *= corr[1];
    }
    // 3. K_{e+1}, V_e visible; every warp done with K_e, V_{e-1}
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    // 4. prefetch
    if (e + 2 < e1)
      load_tile_sw128<T, D>(sK(slot), a.k, k_tile(e + 2), g, tid);
    if (e + 1 < e1)
      load_tile_sw128<T, D>(sV(slot ^ 1), a.v, k_tile(e + 1), g, tid);
    cp_async_commit();
    // 5. S_{e+1} and P_e V_e on the tensor cores
    reg_fence(o);
    wg_fence();
    if (e + 1 < e1) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss_n64<T>(s, kmajor_desc(sQ, kk), kmajor_desc(sK(slot ^ 1), kk), kk > 0);
    }
    wg_commit();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if constexpr (D == 128)
        wgmma_rs_n128_tb<T>(o, pa[kk], nmajor_desc(sV(slot), kk), 1);
      else
        wgmma_rs_n64_tb<T>(o, pa[kk], nmajor_desc(sV(slot), kk), 1);
    }
    wg_commit();
    wg_wait<1>();
    reg_fence(s);
  }
  wg_wait<0>();
  reg_fence(o);
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = r_lo + 8 * r;
    if (row >= tq.n)
      continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    T* op = at<T>(a.o, tq.row0 + row, h, D) + (lane & 3) * 2;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t*>(op + dn * 8) = pack2<T>(o[dn * 4 + 2 * r] * inv, o[dn * 4 + 2 * r + 1] * inv);
    if ((lane & 3) == 0)
      *at<float>(a.lse, tq.row0 + row, h, 1) = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
#else
  __trap(); // launched only on sm_90 devices (forward_wgmma checks)
#endif
}

template <class T, int D> void launch(const AttnArgs& a, const DevicePlan& p) {
  constexpr int kSmemBytes = fwd_smem_bytes<D>();
  static bool attribute_set = false; // once per process and instantiation
  if (!attribute_set) {
    KN_CUDA_CHECK(cudaFuncSetAttribute(fwd_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    attribute_set = true;
  }
  const unsigned grid = unsigned(p.q_tiles() * (a.head_end - a.head_begin));
  fwd_wgmma_kernel<T, D><<<grid, kThreads, kSmemBytes, a.stream>>>(a, p.view(), scale_of(a) * kLog2e);
  KN_LAUNCH_CHECK(fwd_wgmma_kernel);
}

} // namespace

void forward_wgmma(const AttnArgs& a, const DevicePlan& p) {
  if (p.q_tiles() == 0)
    return;
  const bool bf = a.dtype == DType::BF16;
  if (a.head_dim == 64)
    bf ? launch<__nv_bfloat16, 64>(a, p) : launch<__half, 64>(a, p);
  else
    bf ? launch<__nv_bfloat16, 128>(a, p) : launch<__half, 128>(a, p);
}

} // namespace cpsim::kernels::detail
