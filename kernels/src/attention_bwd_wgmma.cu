// The Hopper backward path (sm_90a): the deterministic two-kernel structure of the mma.sync backward
// (attention_bwd_mma.cu: one CTA per key tile and KV head for dK/dV, one per query tile and head for
// dQ, P recomputed from the LSE), with every product on wgmma. A CTA is one warpgroup; the 64 x 64
// score tiles come from shared memory (m64n64k16, both operands K-major), the accumulating products
// take the elementwise result from registers and read their B operand N-major (m64nDk16):
//   dK/dV kernel (rows = keys):    S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T scale - LSE),
//                                  dS^T = P^T (dP^T - Delta), dV += P^T dO, dK += dS^T Q;
//   dQ kernel (rows = queries):    S = Q K^T, dP = dO V^T, dS = P (dP - Delta), dQ += dS K.
// Loads are double-buffered with cp.async; the next tile's loads are issued right after the barrier
// that retires the previous one, so they overlap a whole iteration.
#include "cuda_check.hpp"
#include "launchers.hpp"
#include "wgmma_helpers.cuh"

namespace cpsim::kernels::detail {

namespace {

/** LSE in log2 units; rows without keys (-inf) and padding rows become +inf so that P = 0 there. */
[[maybe_unused]] __device__ __forceinline__ float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

template <class T, int D> __device__ __forceinline__ void wgmma_rs_nd(float (&d)[D / 2], const uint32_t (&a)[4], uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (D == 128)
    wgmma_rs_n128_tb<T>(d, a, desc_b, 1);
  else
    wgmma_rs_n64_tb<T>(d, a, desc_b, 1);
#endif
}

/** Packs the 64 x 64 fp32 accumulator tile into the four 16-column A fragments of the next product. */
template <class T> __device__ __forceinline__ void to_a_fragments(const float (&x)[32], uint32_t (&f)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      f[kk][j] = pack2<T>(x[8 * kk + 2 * j], x[8 * kk + 2 * j + 1]);
}

constexpr int kStatsBytes = 4 * kTileRows * int(sizeof(float)); // LSE and Delta, two stages

template <int D> constexpr int dkdv_smem_bytes() { return 6 * kTileRows * D * 2 + kStatsBytes + 1024; }
template <int D> constexpr int dq_smem_bytes() { return 6 * kTileRows * D * 2 + 1024; }

template <class T, int D>
__global__ void __launch_bounds__(kThreads, 2) dkdv_wgmma_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale,
                                                                 float scale_log2, int g0, int n_heads) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint4 smem[];
  constexpr int kTB = kTileRows * D * 2;
  const int n_kv = (a.head_end - 1) / a.heads_per_kv + 1 - g0;
  const int kt = v.k_order[blockIdx.x / n_kv], g = g0 + int(blockIdx.x % n_kv);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const TileRange tk = v.k_tiles[kt];
  const uint32_t sK = align1024(smem_addr(smem)), sV = sK + kTB;
  auto sQ = [&](int st) { return sK + uint32_t(kTB * (2 + st)); };
  auto sO = [&](int st) { return sK + uint32_t(kTB * (4 + st)); }; // dO
  float* sL = reinterpret_cast<float*>(reinterpret_cast<char*>(smem) + (sK - smem_addr(smem)) + 6 * kTB); // [2][64] LSE (log2)
  float* sDl = sL + 2 * kTileRows;                                                                       // [2][64] Delta
  load_tile_sw128<T, D>(sK, a.k, tk, g, tid);
  load_tile_sw128<T, D>(sV, a.v, tk, g, tid);
  cp_async_commit();

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i)
    dk[i] = dv[i] = 0.f;
  const int k_lo = warp * 16 + (lane >> 2); // this thread's key rows: k_lo and k_lo + 8
  const int64_t kpos[2] = {tk.pos0 + int64_t(k_lo) * tk.pos_stride, tk.pos0 + int64_t(k_lo + 8) * tk.pos_stride};

  // The (head, query tile) pairs of this KV head's group, walked as one sequence so the pipeline
  // runs across head boundaries.
  const int h_lo = max(a.head_begin, g * a.heads_per_kv), h_hi = min(a.head_end, (g + 1) * a.heads_per_kv);
  auto range_of = [&](int h, int& e0, int& e1, int& nf) {
    const int item = (v.head_slots == 1 ? 0 : h - a.head_begin) * v.n_k + kt;
    e0 = v.bwd_off[item];
    e1 = v.bwd_off[item + 1];
    nf = v.bwd_nfull[item];
  };
  auto load_q = [&](int st, int h, int e) {
    const int qt = v.bwd_idx[e];
    const TileRange tq = v.q_tiles[qt];
    load_tile_sw128<T, D>(sQ(st), a.q, tq, h, tid);
    load_tile_sw128<T, D>(sO(st), a.dout, tq, h, tid);
    if (tid < kTileRows) {
      const int r = tid, hi = h - a.head_begin;
      sL[st * kTileRows + r] = r < tq.n ? lse_log2(*at<float>(a.lse_in, tq.row0 + r, h, 1)) : INFINITY;
      sDl[st * kTileRows + r] = r < tq.n ? delta[(int64_t(qt) * kTileRows + r) * n_heads + hi] : 0.f;
    }
  };
  // cursor over (h, e): the current pair and the next one
  int h = h_lo, e0 = 0, e1 = 0, nf = 0;
  if (h < h_hi)
    range_of(h, e0, e1, nf);
  auto advance = [&](int& hh, int& e, int& b0, int& b1, int& bnf) { // to the next non-empty pair
    ++e;
    while (e >= b1 && ++hh < h_hi) {
      range_of(hh, b0, b1, bnf);
      e = b0;
    }
  };
  int e = e0;
  while (e >= e1 && ++h < h_hi) {
    range_of(h, e0, e1, nf);
    e = e0;
  }
  if (h < h_hi)
    load_q(0, h, e);
  cp_async_commit();

  int st = 0;
  while (h < h_hi) {
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads(); // this pair's Q, dO, stats (and K, V) visible; every warp done with the other stage
    const bool partial = e - e0 >= nf;
    const TileRange tq = v.q_tiles[v.bwd_idx[e]];
    {
      int h2 = h, e2 = e, b0 = e0, b1 = e1, bnf = nf;
      advance(h2, e2, b0, b1, bnf);
      if (h2 < h_hi)
        load_q(st ^ 1, h2, e2);
      cp_async_commit();
    }
    // S^T = K Q^T and dP^T = V dO^T: this warpgroup's 64 keys x 64 queries
    float p[32], dp[32];
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss_n64<T>(p, kmajor_desc(sK, kk), kmajor_desc(sQ(st), kk), kk > 0);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss_n64<T>(dp, kmajor_desc(sV, kk), kmajor_desc(sO(st), kk), kk > 0);
    wg_commit();
    wg_wait<0>();
    reg_fence(p);
    reg_fence(dp);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = nt * 8 + (lane & 3) * 2 + (c & 1);
        const bool vis = !partial || (col < tq.n && k_lo + 8 * (c >> 1) < tk.n && plan_visible(v, tk.seq, tq.pos0 + int64_t(col) * tq.pos_stride, kpos[c >> 1]));
        const float pr = vis ? exp2f(fmaf(p[nt * 4 + c], scale_log2, -sL[st * kTileRows + col])) : 0.f;
        p[nt * 4 + c] = pr;
        dp[nt * 4 + c] = pr * (dp[nt * 4 + c] - sDl[st * kTileRows + col]);
      }
    uint32_t pa[4][4], da[4][4];
    to_a_fragments<T>(p, pa);
    to_a_fragments<T>(dp, da);
    // dV += P^T dO, dK += dS^T Q (scaled at the end)
    reg_fence(dv);
    reg_fence(dk);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs_nd<T, D>(dv, pa[kk], nmajor_desc(sO(st), kk));
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs_nd<T, D>(dk, da[kk], nmajor_desc(sQ(st), kk));
    wg_commit();
    wg_wait<0>();
    reg_fence(dv);
    reg_fence(dk);
    advance(h, e, e0, e1, nf);
    st ^= 1;
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = k_lo + 8 * r;
    if (row >= tk.n)
      continue;
    T* dkp = at<T>(a.dk, tk.row0 + row, g, D) + (lane & 3) * 2;
    T* dvp = at<T>(a.dv, tk.row0 + row, g, D) + (lane & 3) * 2;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      *reinterpret_cast<uint32_t*>(dkp + dn * 8) = pack2<T>(dk[dn * 4 + 2 * r] * scale, dk[dn * 4 + 2 * r + 1] * scale);
      *reinterpret_cast<uint32_t*>(dvp + dn * 8) = pack2<T>(dv[dn * 4 + 2 * r], dv[dn * 4 + 2 * r + 1]);
    }
  }
#else
  __trap();
#endif
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads, 2) dq_wgmma_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale,
                                                               float scale_log2, int n_heads) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint4 smem[];
  constexpr int kTB = kTileRows * D * 2;
  const int qt = v.q_order[blockIdx.x / n_heads], hi = int(blockIdx.x % n_heads), h = a.head_begin + hi, g = h / a.heads_per_kv;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const TileRange tq = v.q_tiles[qt];
  const int item = (v.head_slots == 1 ? 0 : hi) * v.n_q + qt;
  const int e0 = v.fwd_off[item], e1 = v.fwd_off[item + 1], n_full = v.fwd_nfull[item];
  const uint32_t sQ = align1024(smem_addr(smem)), sO = sQ + kTB; // Q, dO
  auto sK = [&](int st) { return sQ + uint32_t(kTB * (2 + st)); };
  auto sV = [&](int st) { return sQ + uint32_t(kTB * (4 + st)); };
  auto k_tile = [&](int e) { return v.k_tiles[v.fwd_idx[e]]; };
  if (e0 < e1) {
    load_tile_sw128<T, D>(sQ, a.q, tq, h, tid);
    load_tile_sw128<T, D>(sO, a.dout, tq, h, tid);
    load_tile_sw128<T, D>(sK(0), a.k, k_tile(e0), g, tid);
    load_tile_sw128<T, D>(sV(0), a.v, k_tile(e0), g, tid);
  }
  cp_async_commit();

  const int r_lo = warp * 16 + (lane >> 2);
  float lse[2], dl[2];
  int64_t qpos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r_lo + 8 * r;
    lse[r] = row < tq.n ? lse_log2(*at<float>(a.lse_in, tq.row0 + row, h, 1)) : INFINITY;
    dl[r] = row < tq.n ? delta[(int64_t(qt) * kTileRows + row) * n_heads + hi] : 0.f;
    qpos[r] = tq.pos0 + int64_t(row) * tq.pos_stride;
  }
  float dq[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i)
    dq[i] = 0.f;

  for (int e = e0; e < e1; ++e) {
    const int st = (e - e0) & 1;
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads(); // K_e, V_e visible; every warp done with stage st ^ 1
    if (e + 1 < e1) {
      load_tile_sw128<T, D>(sK(st ^ 1), a.k, k_tile(e + 1), g, tid);
      load_tile_sw128<T, D>(sV(st ^ 1), a.v, k_tile(e + 1), g, tid);
    }
    cp_async_commit();
    float p[32], ds[32];
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss_n64<T>(p, kmajor_desc(sQ, kk), kmajor_desc(sK(st), kk), kk > 0);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss_n64<T>(ds, kmajor_desc(sO, kk), kmajor_desc(sV(st), kk), kk > 0);
    wg_commit();
    wg_wait<0>();
    reg_fence(p);
    reg_fence(ds);
    const bool partial = e - e0 >= n_full;
    const TileRange tk = k_tile(e);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int key = nt * 8 + (lane & 3) * 2 + (c & 1);
        const bool vis = !partial || (key < tk.n && r_lo + 8 * (c >> 1) < tq.n && plan_visible(v, tq.seq, qpos[c >> 1], tk.pos0 + int64_t(key) * tk.pos_stride));
        const float pr = vis ? exp2f(fmaf(p[nt * 4 + c], scale_log2, -lse[c >> 1])) : 0.f;
        ds[nt * 4 + c] = pr * (ds[nt * 4 + c] - dl[c >> 1]);
      }
    uint32_t da[4][4];
    to_a_fragments<T>(ds, da);
    // dQ += dS K (scaled at the end)
    reg_fence(dq);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs_nd<T, D>(dq, da[kk], nmajor_desc(sK(st), kk));
    wg_commit();
    wg_wait<0>();
    reg_fence(dq);
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r_lo + 8 * r;
    if (row >= tq.n)
      continue;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const int col = dn * 8 + (lane & 3) * 2;
      if (a.dq_accumulate) {
        float2* d = reinterpret_cast<float2*>(at<float>(a.dq, tq.row0 + row, h, D) + col);
        float2 x = *d;
        x.x += dq[dn * 4 + 2 * r] * scale;
        x.y += dq[dn * 4 + 2 * r + 1] * scale;
        *d = x;
      } else {
        *reinterpret_cast<uint32_t*>(at<T>(a.dq, tq.row0 + row, h, D) + col) =
            pack2<T>(dq[dn * 4 + 2 * r] * scale, dq[dn * 4 + 2 * r + 1] * scale);
      }
    }
  }
#else
  __trap();
#endif
}

template <class T, int D> void launch(const AttnArgs& a, const DevicePlan& p) {
  constexpr int kDkdvSmem = dkdv_smem_bytes<D>();
  constexpr int kDqSmem = dq_smem_bytes<D>();
  static bool attribute_set = false;
  if (!attribute_set) {
    KN_CUDA_CHECK(cudaFuncSetAttribute(dkdv_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kDkdvSmem));
    KN_CUDA_CHECK(cudaFuncSetAttribute(dq_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kDqSmem));
    attribute_set = true;
  }
  const int n_heads = a.head_end - a.head_begin;
  const float scale = scale_of(a);
  float* delta = nullptr;
  const size_t delta_bytes = size_t(p.q_tiles()) * kTileRows * size_t(n_heads) * sizeof(float);
  KN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&delta), std::max<size_t>(delta_bytes, 16), a.stream));
  compute_delta(a, p, delta);
  if (p.k_tiles() > 0) {
    const int g0 = a.head_begin / a.heads_per_kv, g1 = (a.head_end - 1) / a.heads_per_kv + 1;
    dkdv_wgmma_kernel<T, D><<<unsigned(p.k_tiles() * (g1 - g0)), kThreads, kDkdvSmem, a.stream>>>(
        a, p.view(), delta, scale, scale * kLog2e, g0, n_heads);
    KN_LAUNCH_CHECK(dkdv_wgmma_kernel);
  }
  if (p.q_tiles() > 0) {
    dq_wgmma_kernel<T, D><<<unsigned(p.q_tiles() * n_heads), kThreads, kDqSmem, a.stream>>>(a, p.view(), delta, scale,
                                                                                                         scale * kLog2e, n_heads);
    KN_LAUNCH_CHECK(dq_wgmma_kernel);
  }
  KN_CUDA_CHECK(cudaFreeAsync(delta, a.stream));
}

} // namespace

void backward_wgmma(const AttnArgs& a, const DevicePlan& p) {
  const bool bf = a.dtype == DType::BF16;
  if (a.head_dim == 64)
    bf ? launch<__nv_bfloat16, 64>(a, p) : launch<__half, 64>(a, p);
  else
    bf ? launch<__nv_bfloat16, 128>(a, p) : launch<__half, 128>(a, p);
}

} // namespace cpsim::kernels::detail
